//! The mesh view kept up to date by watches: one per kind (and per namespace asked for), each
//! a bounded reflector of trimmed objects (the fields the posture needs, nothing else), and a
//! new [`MeshConfig`] published whenever one changes. A re-list (after `410 Gone`) replaces a
//! reflector's contents whole, so a deletion missed while a watch was down disappears too.

use std::collections::BTreeMap;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher::{self, Event, watcher};
use tokio::sync::watch;

use super::fetch::{
    GATEWAY_GROUP, ISTIO_GROUP, MAX_OBJECTS, MeshError, dynamic, json, served_version,
    waypoint_gateway, waypoint_pod, waypoints,
};
use super::{DestinationRule, MeshConfig, ServiceEntry, USE_WAYPOINT};
use crate::source::kube::WAYPOINT_SELECTOR;

/// A watched object, trimmed to what the posture reads.
#[derive(Debug, Clone, PartialEq)]
enum Trimmed {
    ServiceEntry(ServiceEntry),
    DestinationRule(DestinationRule),
    /// namespace, name, `istio.io/waypoint-for`.
    Gateway((String, String, String)),
    /// namespace, Gateway name, ready.
    WaypointPod((String, String, bool)),
    /// The namespace's `istio.io/use-waypoint` label.
    Namespace(String, Option<String>),
}

/// One watch's objects by `namespace/name`, at most [`MAX_OBJECTS`].
#[derive(Debug, Default)]
struct Reflector {
    what: &'static str,
    objects: BTreeMap<String, Trimmed>,
    /// A list in progress, swapped in whole when it is done.
    listing: Option<BTreeMap<String, Trimmed>>,
    /// Objects (or their updates) not kept, past the limit, in the last list and since.
    left_out: usize,
}

impl Reflector {
    /// Applies one event; true when the objects changed.
    fn apply(&mut self, event: Event<(String, Option<Trimmed>)>) -> bool {
        let insert = |objects: &mut BTreeMap<String, Trimmed>, left_out: &mut usize, key, item| {
            if objects.len() < MAX_OBJECTS || objects.contains_key(&key) {
                objects.insert(key, item);
            } else {
                *left_out += 1;
            }
        };
        match event {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                self.left_out = 0;
                false
            }
            Event::InitApply((key, Some(item))) => {
                let listing = self.listing.get_or_insert_with(BTreeMap::new);
                insert(listing, &mut self.left_out, key, item);
                false
            }
            Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                let changed = listed != self.objects;
                self.objects = listed;
                changed
            }
            Event::Apply((key, Some(item))) => {
                if self.objects.get(&key) == Some(&item) {
                    return false;
                }
                insert(&mut self.objects, &mut self.left_out, key, item);
                true
            }
            // Objects that do not count (a Gateway of another class) are removed like deleted
            // ones: a class can change.
            Event::Apply((key, None)) | Event::Delete((key, _)) => {
                self.objects.remove(&key).is_some()
            }
            Event::InitApply((_, None)) => false,
        }
    }
}

type Events = std::pin::Pin<
    Box<
        dyn Stream<Item = (usize, Result<Event<(String, Option<Trimmed>)>, watcher::Error>)> + Send,
    >,
>;

fn key(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// A watch of `api`, its objects trimmed by `trim`, tagged with the reflector's index.
fn reflect<K>(
    index: usize,
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&K) -> Option<Trimmed>,
) -> Events
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, config)
        .map(move |event| {
            let event = event.map(|e| trimmed(e, trim));
            (index, event)
        })
        .boxed()
}

/// A watched object's event as the reflector takes it: keyed by `namespace/name`, trimmed.
fn trimmed<K: kube::Resource>(
    event: Event<K>,
    trim: fn(&K) -> Option<Trimmed>,
) -> Event<(String, Option<Trimmed>)> {
    let keyed = |object: K| (key(object.meta()), trim(&object));
    match event {
        Event::Init => Event::Init,
        Event::InitApply(object) => Event::InitApply(keyed(object)),
        Event::InitDone => Event::InitDone,
        Event::Apply(object) => Event::Apply(keyed(object)),
        Event::Delete(object) => Event::Delete(keyed(object)),
    }
}

fn service_entry(object: &DynamicObject) -> Option<Trimmed> {
    Some(Trimmed::ServiceEntry(ServiceEntry::from_object(&json(object))))
}

fn destination_rule(object: &DynamicObject) -> Option<Trimmed> {
    Some(Trimmed::DestinationRule(DestinationRule::from_object(&json(object))))
}

fn gateway(object: &DynamicObject) -> Option<Trimmed> {
    waypoint_gateway(&json(object)).map(Trimmed::Gateway)
}

fn pod(object: &Pod) -> Option<Trimmed> {
    waypoint_pod(object).map(Trimmed::WaypointPod)
}

fn namespace(object: &Namespace) -> Option<Trimmed> {
    let labels = object.metadata.labels.as_ref();
    let waypoint = labels.and_then(|l| l.get(USE_WAYPOINT)).cloned();
    Some(Trimmed::Namespace(object.metadata.name.clone()?, waypoint))
}

/// The view from every reflector's objects.
fn assemble(reflectors: &[Reflector]) -> MeshConfig {
    let mut mesh = MeshConfig::default();
    let (mut gateways, mut pods) = (Vec::new(), Vec::new());
    for reflector in reflectors {
        for object in reflector.objects.values() {
            match object {
                Trimmed::ServiceEntry(entry) => mesh.service_entries.push(entry.clone()),
                Trimmed::DestinationRule(rule) => mesh.destination_rules.push(rule.clone()),
                Trimmed::Gateway(gateway) => gateways.push(gateway),
                Trimmed::WaypointPod(pod) => pods.push(pod),
                Trimmed::Namespace(name, Some(waypoint)) => {
                    mesh.namespace_waypoints.insert(name.clone(), waypoint.clone());
                }
                Trimmed::Namespace(_, None) => {}
            }
        }
        if reflector.left_out > 0 {
            mesh.warnings.push(format!(
                "{} {} (or updates of them) left out: at most {MAX_OBJECTS} are kept",
                reflector.left_out, reflector.what
            ));
        }
    }
    mesh.waypoints = waypoints(gateways, pods);
    mesh
}

/// Watches the mesh's egress configuration (ServiceEntries in `namespaces`, all when empty)
/// and publishes every new view on `out` until `stop`. Watch errors are retried by the
/// watcher (re-listing after a `410 Gone`); only discovery failing ends it.
pub async fn watch_mesh(
    client: Client,
    namespaces: Vec<String>,
    out: watch::Sender<MeshConfig>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), MeshError> {
    let istio = served_version(&client, ISTIO_GROUP)
        .await?
        .ok_or(MeshError::NotServed { group: ISTIO_GROUP })?;
    let mut reflectors = Vec::new();
    let mut streams: Vec<Events> = Vec::new();
    let config = watcher::Config::default;
    for api in
        dynamic(&client, (ISTIO_GROUP, &istio), ("ServiceEntry", "serviceentries"), &namespaces)
    {
        streams.push(reflect(reflectors.len(), api, config(), service_entry));
        reflectors.push(Reflector { what: "ServiceEntries", ..Reflector::default() });
    }
    for api in dynamic(&client, (ISTIO_GROUP, &istio), ("DestinationRule", "destinationrules"), &[])
    {
        streams.push(reflect(reflectors.len(), api, config(), destination_rule));
        reflectors.push(Reflector { what: "DestinationRules", ..Reflector::default() });
    }
    if let Some(version) = served_version(&client, GATEWAY_GROUP).await? {
        for api in dynamic(&client, (GATEWAY_GROUP, &version), ("Gateway", "gateways"), &[]) {
            streams.push(reflect(reflectors.len(), api, config(), gateway));
            reflectors.push(Reflector { what: "Gateways", ..Reflector::default() });
        }
        let pods: Api<Pod> = Api::all(client.clone());
        streams.push(reflect(reflectors.len(), pods, config().labels(WAYPOINT_SELECTOR), pod));
        reflectors.push(Reflector { what: "waypoint pods", ..Reflector::default() });
    }
    let all: Api<Namespace> = Api::all(client.clone());
    streams.push(reflect(reflectors.len(), all, config(), namespace));
    reflectors.push(Reflector { what: "namespaces", ..Reflector::default() });

    let mut events = futures::stream::select_all(streams);
    // Published once every watch has its first list, then on every change.
    let mut listed = vec![false; reflectors.len()];
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let Some((index, event)) = next else { return Ok(()) };
        let Ok(event) = event else {
            // Transient (the watcher re-lists by itself); wait a little before going on.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            continue;
        };
        let done = matches!(event, Event::InitDone);
        let changed = reflectors[index].apply(event);
        listed[index] |= done;
        if listed.iter().all(|l| *l) && (changed || done) {
            let mesh = assemble(&reflectors);
            out.send_if_modified(|current| {
                let modified = *current != mesh;
                *current = mesh;
                modified
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> Trimmed {
        Trimmed::Namespace(name.to_owned(), Some("waypoint".to_owned()))
    }

    #[test]
    fn a_relist_replaces_the_objects_whole() {
        let mut reflector = Reflector { what: "namespaces", ..Reflector::default() };
        assert!(!reflector.apply(Event::Init));
        assert!(!reflector.apply(Event::InitApply(("/a".into(), Some(entry("a"))))));
        assert!(!reflector.apply(Event::InitApply(("/b".into(), Some(entry("b"))))));
        assert!(reflector.apply(Event::InitDone));
        assert!(!reflector.apply(Event::Apply(("/a".into(), Some(entry("a"))))), "unchanged");
        // b was deleted while the watch was down: the re-list does not show it.
        reflector.apply(Event::Init);
        reflector.apply(Event::InitApply(("/a".into(), Some(entry("a")))));
        assert!(reflector.apply(Event::InitDone));
        assert_eq!(reflector.objects.keys().collect::<Vec<_>>(), ["/a"]);
        assert!(reflector.apply(Event::Delete(("/a".into(), None))));
        assert!(reflector.objects.is_empty());
    }
}
