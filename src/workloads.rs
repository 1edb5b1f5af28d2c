//! Who is behind a source IP: a bounded directory from pod IPs to their workload and
//! namespace, kept by a pod watch ([`crate::source::kube::reflect_workloads`]) and read by the
//! parsing threads to fill `source_workload` and `source_namespace`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Most pod IPs held; past it new ones are not added, and counted.
pub const MAX_IPS: usize = 200_000;

/// A pod's workload: its controller (a Deployment for a ReplicaSet's pods), else the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    /// The pod's UID: a deletion only removes the IP if it still belongs to that pod.
    pub uid: Arc<str>,
}

/// Pod IP → workload, shared between the watch and the parsers.
#[derive(Debug, Default)]
pub struct Workloads {
    by_ip: RwLock<HashMap<String, Workload>>,
    /// IPs not added because the directory was full.
    pub dropped: AtomicU64,
}

impl Workloads {
    pub fn lookup(&self, ip: &str) -> Option<Workload> {
        self.by_ip.read().ok()?.get(ip).cloned()
    }

    /// Records `ips` as `workload`'s.
    pub fn insert(&self, ips: &[String], workload: &Workload) {
        let Ok(mut map) = self.by_ip.write() else { return };
        for ip in ips {
            if map.len() >= MAX_IPS && !map.contains_key(ip) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            map.insert(ip.clone(), workload.clone());
        }
    }

    /// Forgets `ips` where they still belong to the pod `uid`.
    pub fn remove(&self, ips: &[String], uid: &str) {
        let Ok(mut map) = self.by_ip.write() else { return };
        for ip in ips {
            if map.get(ip).is_some_and(|w| &*w.uid == uid) {
                map.remove(ip);
            }
        }
    }

    /// Replaces everything (after a full list).
    pub fn replace(&self, entries: HashMap<String, Workload>) {
        if let Ok(mut map) = self.by_ip.write() {
            *map = entries;
        }
    }

    pub fn len(&self) -> usize {
        self.by_ip.read().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The workload of a pod: its controller's name, with a ReplicaSet's `-<pod-template-hash>`
/// taken off (the Deployment's name); the pod's own name when nothing controls it.
pub fn workload_name(
    pod: &str,
    owner: Option<(&str, &str)>,
    pod_template_hash: Option<&str>,
) -> String {
    match owner {
        Some(("ReplicaSet", replica_set)) => pod_template_hash
            .and_then(|hash| replica_set.strip_suffix(hash)?.strip_suffix('-'))
            .unwrap_or(replica_set)
            .to_owned(),
        Some((_, name)) => name.to_owned(),
        None => pod.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_are_controllers_and_deployments() {
        let rs = Some(("ReplicaSet", "sleep-7b9f8d6c5"));
        assert_eq!(workload_name("sleep-7b9f8d6c5-x2x7k", rs, Some("7b9f8d6c5")), "sleep");
        assert_eq!(workload_name("p", rs, None), "sleep-7b9f8d6c5");
        assert_eq!(workload_name("db-0", Some(("StatefulSet", "db")), None), "db");
        assert_eq!(workload_name("debug", None, None), "debug");
    }

    #[test]
    fn a_deleted_pod_only_takes_its_own_ips() {
        let workloads = Workloads::default();
        let old = Workload { name: "a".into(), namespace: "ns".into(), uid: "1".into() };
        let new = Workload { name: "b".into(), namespace: "ns".into(), uid: "2".into() };
        workloads.insert(&["10.0.0.1".into()], &old);
        workloads.insert(&["10.0.0.1".into()], &new);
        workloads.remove(&["10.0.0.1".into()], "1");
        assert_eq!(workloads.lookup("10.0.0.1"), Some(new));
    }
}
