//! Reads the mesh's egress configuration through the Kubernetes API: the Istio and Gateway
//! API versions the cluster serves are found by discovery (`networking.istio.io/v1`, else
//! `v1beta1`; `gateway.networking.k8s.io/v1`, else `v1beta1`), then every kind is listed in
//! pages, at most [`MAX_OBJECTS`] per kind (the rest is counted in a warning).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::de::DeserializeOwned;

use super::{
    DestinationRule, MeshConfig, ServiceEntry, USE_WAYPOINT, WAYPOINT_CLASS, WAYPOINT_FOR, Waypoint,
};
use crate::source::kube::WAYPOINT_SELECTOR;

/// Most objects of one kind read.
pub const MAX_OBJECTS: usize = 10_000;

pub(super) const ISTIO_GROUP: &str = "networking.istio.io";
pub(super) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The labels a waypoint pod carries its Gateway's name in (Istio 1.21+, then older).
const GATEWAY_NAME_LABELS: [&str; 2] =
    ["gateway.networking.k8s.io/gateway-name", "istio.io/gateway-name"];

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("the API server serves no {group} v1 or v1beta1: is Istio installed?")]
    NotServed { group: &'static str },
    #[error("listing {what} failed")]
    List {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// The version of `group` to use: `v1`, else `v1beta1`; None when neither is served.
pub(super) async fn served_version(
    client: &Client,
    group: &'static str,
) -> Result<Option<String>, MeshError> {
    let groups = client
        .list_api_groups()
        .await
        .map_err(|source| MeshError::List { what: "API groups", source })?;
    let Some(found) = groups.groups.iter().find(|g| g.name == group) else { return Ok(None) };
    Ok(["v1", "v1beta1"]
        .into_iter()
        .find(|v| found.versions.iter().any(|served| served.version == *v))
        .map(str::to_owned))
}

/// Every object `apis` list, in pages, up to [`MAX_OBJECTS`].
async fn list<K>(
    apis: Vec<Api<K>>,
    selector: Option<&str>,
    what: &'static str,
    mesh: &mut MeshConfig,
) -> Result<Vec<K>, MeshError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut left_out = 0usize;
    for api in apis {
        let mut params = ListParams::default().limit(500);
        if let Some(selector) = selector {
            params = params.labels(selector);
        }
        loop {
            let page =
                api.list(&params).await.map_err(|source| MeshError::List { what, source })?;
            for item in page.items {
                if items.len() < MAX_OBJECTS {
                    items.push(item);
                } else {
                    left_out += 1;
                }
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
    }
    if left_out > 0 {
        mesh.warnings.push(format!("{left_out} {what} left out: at most {MAX_OBJECTS} are read"));
    }
    Ok(items)
}

/// One API per namespace of `namespaces`, or one for all when it is empty.
pub(super) fn dynamic(
    client: &Client,
    (group, version): (&str, &str),
    (kind, plural): (&str, &str),
    namespaces: &[String],
) -> Vec<Api<DynamicObject>> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    if namespaces.is_empty() {
        return vec![Api::all_with(client.clone(), &resource)];
    }
    namespaces.iter().map(|ns| Api::namespaced_with(client.clone(), ns, &resource)).collect()
}

pub(super) fn json(object: &DynamicObject) -> serde_json::Value {
    serde_json::to_value(object).unwrap_or_default()
}

/// Reads the mesh's egress configuration in `namespaces` (all when empty).
pub async fn fetch(client: &Client, namespaces: &[String]) -> Result<MeshConfig, MeshError> {
    let mut mesh = MeshConfig::default();
    let istio = served_version(client, ISTIO_GROUP)
        .await?
        .ok_or(MeshError::NotServed { group: ISTIO_GROUP })?;
    let entries =
        dynamic(client, (ISTIO_GROUP, &istio), ("ServiceEntry", "serviceentries"), namespaces);
    let entries = list(entries, None, "ServiceEntries", &mut mesh).await?;
    mesh.service_entries = entries.iter().map(|o| ServiceEntry::from_object(&json(o))).collect();
    // Rules in other namespaces apply too (exported by default): all of them are read.
    let rules =
        dynamic(client, (ISTIO_GROUP, &istio), ("DestinationRule", "destinationrules"), &[]);
    let rules = list(rules, None, "DestinationRules", &mut mesh).await?;
    mesh.destination_rules = rules.iter().map(|o| DestinationRule::from_object(&json(o))).collect();

    match served_version(client, GATEWAY_GROUP).await? {
        Some(version) => {
            let gateways = dynamic(client, (GATEWAY_GROUP, &version), ("Gateway", "gateways"), &[]);
            let gateways = list(gateways, None, "Gateways", &mut mesh).await?;
            let pods: Vec<Api<Pod>> = vec![Api::all(client.clone())];
            let pods = list(pods, Some(WAYPOINT_SELECTOR), "waypoint pods", &mut mesh).await?;
            let gateways: Vec<_> =
                gateways.iter().filter_map(|g| waypoint_gateway(&json(g))).collect();
            let pods: Vec<_> = pods.iter().filter_map(waypoint_pod).collect();
            mesh.waypoints = waypoints(&gateways, &pods);
        }
        None => mesh
            .warnings
            .push(format!("the API server serves no {GATEWAY_GROUP}: there can be no waypoints")),
    }

    let all: Api<Namespace> = Api::all(client.clone());
    let listed = all
        .list(&ListParams::default())
        .await
        .map_err(|source| MeshError::List { what: "namespaces", source })?;
    for namespace in listed.items.iter().take(MAX_OBJECTS) {
        let labels = namespace.metadata.labels.as_ref();
        if let (Some(name), Some(waypoint)) =
            (&namespace.metadata.name, labels.and_then(|l| l.get(USE_WAYPOINT)))
        {
            mesh.namespace_waypoints.insert(name.clone(), waypoint.clone());
        }
    }
    Ok(mesh)
}

/// A Gateway of class `istio-waypoint`: None for any other Gateway.
pub(super) fn waypoint_gateway(gateway: &serde_json::Value) -> Option<(String, String, String)> {
    if gateway["spec"]["gatewayClassName"] != WAYPOINT_CLASS {
        return None;
    }
    let meta = &gateway["metadata"];
    let waypoint_for = meta["labels"][WAYPOINT_FOR].as_str().unwrap_or("service").to_owned();
    Some((meta["namespace"].as_str()?.to_owned(), meta["name"].as_str()?.to_owned(), waypoint_for))
}

/// A waypoint pod's namespace, Gateway name and readiness.
pub(crate) fn waypoint_pod(pod: &Pod) -> Option<(String, String, bool)> {
    let labels = pod.metadata.labels.as_ref()?;
    let gateway = GATEWAY_NAME_LABELS.iter().find_map(|key| labels.get(*key))?;
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some((pod.metadata.namespace.clone()?, gateway.clone(), ready))
}

/// The waypoints, with their pods counted (all, and Ready).
pub(super) fn waypoints<'a>(
    gateways: impl IntoIterator<Item = &'a (String, String, String)>,
    pods: impl IntoIterator<Item = &'a (String, String, bool)>,
) -> Vec<Waypoint> {
    let mut counts: BTreeMap<(&str, &str), (usize, usize)> = BTreeMap::new();
    for (namespace, gateway, ready) in pods {
        let count = counts.entry((namespace, gateway)).or_default();
        count.0 += 1;
        count.1 += usize::from(*ready);
    }
    gateways
        .into_iter()
        .map(|(namespace, name, waypoint_for)| {
            let (pods, ready_pods) =
                counts.get(&(namespace.as_str(), name.as_str())).copied().unwrap_or_default();
            Waypoint {
                namespace: namespace.clone(),
                name: name.clone(),
                waypoint_for: waypoint_for.clone(),
                pods,
                ready_pods,
            }
        })
        .collect()
}
