//! A generic object store keyed by (group, version, resource, namespace, name), with one
//! resourceVersion counter and an event history, as etcd behind kube-apiserver.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gvr {
    pub group: String,
    pub version: String,
    pub resource: String,
}

impl Gvr {
    pub fn new(group: &str, version: &str, resource: &str) -> Self {
        Gvr {
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
        }
    }

    pub fn vm() -> Self {
        Gvr::new("kubevirt.io", "v1", "virtualmachines")
    }

    pub fn vmi() -> Self {
        Gvr::new("kubevirt.io", "v1", "virtualmachineinstances")
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The Kind for the resources this fake knows; others get a generic name.
    pub fn kind(&self) -> String {
        match self.resource.as_str() {
            "virtualmachines" => "VirtualMachine".into(),
            "virtualmachineinstances" => "VirtualMachineInstance".into(),
            "pods" => "Pod".into(),
            "secrets" => "Secret".into(),
            "services" => "Service".into(),
            "serviceaccounts" => "ServiceAccount".into(),
            "datavolumes" => "DataVolume".into(),
            "rolebindings" => "RoleBinding".into(),
            "configmaps" => "ConfigMap".into(),
            "tokenreviews" => "TokenReview".into(),
            other => {
                let mut kind = other.trim_end_matches('s').to_owned();
                if let Some(first) = kind.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                kind
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub gvr: Gvr,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(gvr: Gvr, namespace: &str, name: &str) -> Self {
        Key {
            gvr,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub rv: u64,
    pub key: Key,
    pub kind: EventType,
    pub object: Value,
}

pub struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: Vec<StoredEvent>,
    /// The resourceVersion the history was last compacted through (0: never).
    compacted_through: u64,
    live: broadcast::Sender<StoredEvent>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            objects: BTreeMap::new(),
            rv: 1000,
            history: Vec::new(),
            compacted_through: 0,
            live: broadcast::channel(1024).0,
        }
    }
}

impl Store {
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    pub fn list(&self, gvr: &Gvr, namespace: &str) -> Vec<Value> {
        self.objects
            .iter()
            // "" lists every namespace (and holds cluster-scoped objects).
            .filter(|(k, _)| &k.gvr == gvr && (namespace.is_empty() || k.namespace == namespace))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Namespaces holding at least one object of `gvr`.
    pub fn namespaces(&self, gvr: &Gvr) -> Vec<String> {
        let mut names: Vec<String> = self
            .objects
            .keys()
            .filter(|k| &k.gvr == gvr)
            .map(|k| k.namespace.clone())
            .collect();
        names.dedup();
        names
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StoredEvent> {
        self.live.subscribe()
    }

    /// Forgets every event so far, as etcd's compaction and the watch cache's bounded window
    /// do: a watch may start from the current resourceVersion or later, not from before it.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_through = self.rv;
    }

    /// For a watch from `rv` whose events are no longer kept: the resourceVersion the history
    /// now starts after. kube-apiserver's watch cache refuses `rv < oldest - 1`, where
    /// `oldest` is the first event it still holds (`staging/src/k8s.io/apiserver/pkg/storage/
    /// cacher/watch_cache.go` `getAllEventsSinceLocked`: "too old resource version").
    pub fn expired(&self, rv: u64) -> Option<u64> {
        (rv < self.compacted_through).then_some(self.compacted_through)
    }

    /// Events after `rv` (for a watch that resumes).
    pub fn since(&self, rv: u64) -> Vec<StoredEvent> {
        // The history is in resourceVersion order: only the tail is copied.
        let start = self.history.partition_point(|e| e.rv <= rv);
        self.history[start..].to_vec()
    }

    /// Creates or replaces: stamps apiVersion, kind, name, namespace, uid, creation time,
    /// generation and a new resourceVersion, and records the event.
    pub fn put(&mut self, key: &Key, mut object: Value) -> Value {
        let existing = self.objects.get(key).cloned();
        self.rv += 1;
        object["apiVersion"] = json!(key.gvr.api_version());
        object["kind"] = json!(key.gvr.kind());
        let meta = &mut object["metadata"];
        if !meta.is_object() {
            *meta = json!({});
        }
        meta["name"] = json!(key.name);
        if key.namespace.is_empty() {
            if let Some(meta) = meta.as_object_mut() {
                meta.remove("namespace");
            }
        } else {
            meta["namespace"] = json!(key.namespace);
        }
        meta["resourceVersion"] = json!(self.rv.to_string());
        let kind = match &existing {
            Some(old) => {
                meta["uid"] = old["metadata"]["uid"].clone();
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
                let old_generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let spec_changed = old.get("spec") != object.get("spec");
                object["metadata"]["generation"] = json!(old_generation + i64::from(spec_changed));
                EventType::Modified
            }
            None => {
                if meta.get("uid").and_then(Value::as_str).is_none() {
                    meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
                }
                meta["creationTimestamp"] = json!("2026-11-21T18:24:45Z");
                if meta.get("generation").is_none() {
                    meta["generation"] = json!(1);
                }
                EventType::Added
            }
        };
        self.objects.insert(key.clone(), object.clone());
        self.record(key, kind, object.clone());
        object
    }

    /// An update that changes nothing is not written: no new resourceVersion, no event, as
    /// kube-apiserver's storage does (staging/src/k8s.io/apiserver/pkg/storage/etcd3/store.go,
    /// `GuaranteedUpdate`: the new bytes equal the stored ones, so it returns the existing
    /// object). Without this, a controller's idempotent apply would wake its own watch forever.
    pub fn update(&mut self, key: &Key, object: Value) -> Value {
        if let Some(existing) = self.objects.get(key) {
            let same = |o: &Value| {
                let mut o = o.clone();
                if let Some(meta) = o["metadata"].as_object_mut() {
                    meta.remove("resourceVersion");
                    meta.remove("managedFields");
                }
                if let Some(obj) = o.as_object_mut() {
                    obj.remove("apiVersion");
                    obj.remove("kind");
                }
                o
            };
            if same(existing) == same(&object) {
                return existing.clone();
            }
        }
        self.put(key, object)
    }

    pub fn delete(&mut self, key: &Key) -> Option<Value> {
        let mut object = self.objects.remove(key)?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(key, EventType::Deleted, object.clone());
        Some(object)
    }

    fn record(&mut self, key: &Key, kind: EventType, object: Value) {
        let event = StoredEvent {
            rv: self.rv,
            key: key.clone(),
            kind,
            object,
        };
        self.history.push(event.clone());
        // Nobody watching is normal.
        let _ = self.live.send(event);
    }
}

/// The next change for a task that plays a cluster component (CDI, virt-controller's Pod
/// half); `None` once the server is gone. Missed events are said on stderr and skipped: such
/// a task reacts to creations and deletions, and a real controller that misses one relists.
pub async fn next_event(
    events: &mut broadcast::Receiver<StoredEvent>,
    component: &str,
) -> Option<StoredEvent> {
    loop {
        match events.recv().await {
            Ok(event) => return Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                eprintln!("fake API server: {component} missed {missed} events");
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}
