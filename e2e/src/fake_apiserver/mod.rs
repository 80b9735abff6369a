//! A fake Kubernetes API server with KubeVirt on top, good enough to catch real mistakes:
//! GET, list and watch with field selectors and resourceVersions (and bookmarks), merge and
//! JSON patches with optimistic concurrency, the exact `Status` bodies kube-apiserver 1.36
//! sends (see `e2e/testdata/fixtures/`), KubeVirt's subresources with virt-api's rules, a
//! simulated virt-controller, bearer tokens limited to named objects, injectable faults and
//! a log of every request for tests to assert on.
//!
//! Objects live in a generic store keyed by (group/version/resource, namespace, name), so
//! Pods, Secrets, Services or DataVolumes need no new storage, only routes where they have
//! special behaviour.

pub mod admission;
pub mod cdi;
mod http;
pub mod kubevirt;
pub mod store;
mod tokens;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use store::{Gvr, Key, Store};

/// What one bearer token may do.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The user the API server reports in 403 messages.
    pub user: String,
    /// Object names it may touch (`None`: all), as RBAC `resourceNames`.
    pub names: Option<BTreeSet<String>>,
    /// Verbs it may not use at all ("get", "list", "watch", "patch", "update", ...).
    pub denied_verbs: BTreeSet<String>,
    /// Resources it may not touch at all, subresources as "resource/subresource" (e.g.
    /// "virtualmachineinstances/console": a Role without that rule).
    pub denied_resources: BTreeSet<String>,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
    pub user: Option<String>,
    pub status: u16,
    /// When the request arrived (before any injected delay), for latency measurements.
    pub received: std::time::Instant,
}

impl RequestRecord {
    pub fn is_watch(&self) -> bool {
        self.query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1")
    }

    /// PUT on a KubeVirt subresource, e.g. "unpause".
    pub fn subresource(&self) -> Option<&str> {
        (self.method == "PUT" && self.path.contains("/subresources.kubevirt.io/"))
            .then(|| self.path.rsplit('/').next())
            .flatten()
    }
}

#[derive(Debug, Default)]
struct Faults {
    slow: Duration,
    conflicts: u32,
}

pub(crate) struct Shared {
    store: Mutex<Store>,
    tokens: Mutex<BTreeMap<String, Grant>>,
    faults: Mutex<Faults>,
    down: watch::Sender<bool>,
    watch_epoch: watch::Sender<u64>,
    frozen: watch::Sender<bool>,
    log: Mutex<Vec<RequestRecord>>,
    /// When each connection refused while down was attempted (the request rate a real API
    /// server's load balancer would see during an outage).
    refused: Mutex<Vec<std::time::Instant>>,
    controller_held: AtomicBool,
    /// CDI is not installed: its group is not served (discovery and every path 404).
    pub(crate) cdi_missing: AtomicBool,
    /// Serial console WebSockets now open.
    pub(crate) open_consoles: Arc<AtomicUsize>,
    /// Watch responses whose body a client still holds.
    pub(crate) open_watches: Arc<AtomicUsize>,
    bookmark_interval: Duration,
    webhook: Mutex<Option<admission::MutatingWebhook>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Lets the simulated controllers react to a change, unless held.
    pub(crate) fn settle(&self, store: &mut Store) {
        if !self.controller_held.load(Ordering::SeqCst) {
            kubevirt::reconcile(store);
        }
    }
}

/// The running fake. Dropping it stops it.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::AbortHandle,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.down.send_replace(true);
    }
}

impl FakeApiServer {
    /// Listens on an ephemeral 127.0.0.1 port (plain HTTP, which kube's client accepts).
    pub async fn start() -> std::io::Result<FakeApiServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            tokens: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(Faults::default()),
            down: watch::channel(false).0,
            watch_epoch: watch::channel(0).0,
            frozen: watch::channel(false).0,
            log: Mutex::new(Vec::new()),
            refused: Mutex::new(Vec::new()),
            controller_held: AtomicBool::new(false),
            cdi_missing: AtomicBool::new(false),
            open_consoles: Arc::new(AtomicUsize::new(0)),
            open_watches: Arc::new(AtomicUsize::new(0)),
            bookmark_interval: Duration::from_millis(500),
            webhook: Mutex::new(None),
        });
        let accept = tokio::spawn(http::serve(listener, shared.clone())).abort_handle();
        Ok(FakeApiServer {
            addr,
            shared,
            accept,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig (JSON, which is YAML) pointing at this server with `token`.
    pub fn kubeconfig(&self, token: &str, namespace: &str) -> String {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url()}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        })
        .to_string()
    }

    /// A token limited to objects named `names` (RBAC `resourceNames`), as the user
    /// `system:serviceaccount:<namespace>:<sa>`.
    pub fn grant(&self, token: &str, user: &str, names: &[&str]) {
        lock(&self.shared.tokens).insert(
            token.to_owned(),
            Grant {
                user: user.to_owned(),
                names: Some(names.iter().map(|n| (*n).to_owned()).collect()),
                denied_verbs: BTreeSet::new(),
                denied_resources: BTreeSet::new(),
            },
        );
    }

    pub fn grant_all(&self, token: &str, user: &str) {
        lock(&self.shared.tokens).insert(
            token.to_owned(),
            Grant {
                user: user.to_owned(),
                names: None,
                denied_verbs: BTreeSet::new(),
                denied_resources: BTreeSet::new(),
            },
        );
    }

    /// Takes verbs away from a token (e.g. "update" for the subresources).
    pub fn deny_verbs(&self, token: &str, verbs: &[&str]) {
        if let Some(grant) = lock(&self.shared.tokens).get_mut(token) {
            grant
                .denied_verbs
                .extend(verbs.iter().map(|v| (*v).to_owned()));
        }
    }

    /// Takes resources away from a token, subresources as "resource/subresource".
    pub fn deny_resources(&self, token: &str, resources: &[&str]) {
        if let Some(grant) = lock(&self.shared.tokens).get_mut(token) {
            grant
                .denied_resources
                .extend(resources.iter().map(|r| (*r).to_owned()));
        }
    }

    /// Creates or replaces an object, then lets the controllers react.
    pub fn put(&self, gvr: Gvr, namespace: &str, name: &str, object: Value) -> Value {
        let mut store = self.shared.store();
        let stored = store.put(&Key::new(gvr, namespace, name), object);
        self.shared.settle(&mut store);
        stored
    }

    /// Deletes an object (as another client would), what it owns going with it.
    pub fn remove(&self, gvr: Gvr, namespace: &str, name: &str) -> Option<Value> {
        let mut store = self.shared.store();
        let removed = store.delete(&Key::new(gvr, namespace, name))?;
        tokens::collect_dependents(&mut store, namespace, &removed);
        self.shared.settle(&mut store);
        Some(removed)
    }

    /// Objects of `gvr` in `namespace` ("" for every namespace).
    pub fn list(&self, gvr: Gvr, namespace: &str) -> Vec<Value> {
        self.shared.store().list(&gvr, namespace)
    }

    pub fn get(&self, gvr: Gvr, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .store()
            .get(&Key::new(gvr, namespace, name))
            .cloned()
    }

    /// Changes an object in place (as another client would), then lets controllers react.
    pub fn modify(&self, gvr: Gvr, namespace: &str, name: &str, change: impl FnOnce(&mut Value)) {
        let mut store = self.shared.store();
        let key = Key::new(gvr, namespace, name);
        if let Some(mut object) = store.get(&key).cloned() {
            change(&mut object);
            store.put(&key, object);
        }
        self.shared.settle(&mut store);
    }

    pub fn vm(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(Gvr::vm(), namespace, name)
    }

    pub fn vmi(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(Gvr::vmi(), namespace, name)
    }

    /// The guest powers itself off; `Always` then replaces the VMI (unless held).
    pub fn guest_shutdown(&self, namespace: &str, name: &str) -> bool {
        let mut store = self.shared.store();
        let done = kubevirt::guest_shutdown(&mut store, namespace, name);
        self.shared.settle(&mut store);
        done
    }

    /// The guest reboots itself (see `kubevirt::guest_reboot`).
    pub fn guest_reboot(&self, namespace: &str, name: &str) -> bool {
        let mut store = self.shared.store();
        let done = kubevirt::guest_reboot(&mut store, namespace, name);
        self.shared.settle(&mut store);
        done
    }

    /// The VMI is lost (node failure, launcher Pod gone): it ends Failed; `Always` replaces it.
    pub fn lose_vmi(&self, namespace: &str, name: &str) -> bool {
        let mut store = self.shared.store();
        let done = kubevirt::lose_vmi(&mut store, namespace, name);
        self.shared.settle(&mut store);
        done
    }

    /// `virtctl restart` by a user: virt-api's restart subresource, as the BMC would call it.
    pub fn restart_by_user(&self, namespace: &str, name: &str) -> Result<(), kubevirt::Refusal> {
        let mut store = self.shared.store();
        let result =
            kubevirt::subresource(&mut store, namespace, "virtualmachines", name, "restart");
        self.shared.settle(&mut store);
        result
    }

    /// Holds virt-controller: VMIs that end are not replaced until released.
    pub fn hold_controller(&self, held: bool) {
        self.shared.controller_held.store(held, Ordering::SeqCst);
        if !held {
            let mut store = self.shared.store();
            self.shared.settle(&mut store);
        }
    }

    /// How many VMI serial console WebSockets are open.
    pub fn open_consoles(&self) -> usize {
        self.shared.open_consoles.load(Ordering::SeqCst)
    }

    /// How many watch responses are still open: lets a test know that a cut has reached
    /// every client before it changes what they would have seen.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
        lock(&self.shared.refused).clear();
    }

    /// Refuses connections and cuts open ones (watches included) while down.
    pub fn set_down(&self, down: bool) {
        self.shared.down.send_replace(down);
    }

    /// When each connection attempt refused while down was made, oldest first.
    pub fn refused_connections(&self) -> Vec<std::time::Instant> {
        lock(&self.shared.refused).clone()
    }

    /// Delays every request (not the events of a watch) by `delay`.
    pub fn set_slow(&self, delay: Duration) {
        lock(&self.shared.faults).slow = delay;
    }

    /// The next `count` patches fail with 409 Conflict, as if another writer won.
    pub fn inject_conflicts(&self, count: u32) {
        lock(&self.shared.faults).conflicts = count;
    }

    /// Ends every open watch stream cleanly (as an API server restart or a load balancer
    /// timeout does); clients must resume from their resourceVersion.
    pub fn break_watches(&self) {
        self.shared.watch_epoch.send_modify(|e| *e += 1);
    }

    /// Compacts the event history through the current resourceVersion: a watch that resumes
    /// from an older one gets 410 Expired and must relist (after an outage longer than the
    /// API server's watch window, say). `history` starts afresh from here.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Installs or removes CDI: without it `/apis/cdi.kubevirt.io/...` answers 404 as
    /// kube-apiserver does for a group no CRD or aggregated API serves (stored DataVolumes
    /// stay, as CRs do when only the served version goes away).
    pub fn set_cdi_installed(&self, installed: bool) {
        self.shared.cdi_missing.store(!installed, Ordering::Relaxed);
    }

    /// Holds back the events of open watches (they arrive, in order, once thawed): lets a
    /// test act on a client whose cache is behind.
    pub fn freeze_watches(&self, frozen: bool) {
        self.shared.frozen.send_replace(frozen);
    }

    /// Calls `webhook` for every Pod CREATE it selects, as kube-apiserver does.
    pub fn set_mutating_webhook(&self, webhook: admission::MutatingWebhook) {
        *lock(&self.shared.webhook) = Some(webhook);
    }

    /// Creates a Pod the way a client inside the cluster does (admission included); the
    /// refusal's message on failure.
    pub async fn create_pod(&self, namespace: &str, pod: Value) -> Result<Value, String> {
        write::create_pod(&self.shared, namespace, pod).await
    }

    /// Plays virt-controller's Pod half: for every new VMI, creates its virt-launcher Pod
    /// (shaped like `template`, a captured launcher Pod) through this server's own create
    /// path, so admission runs on it. Launcher Pods of deleted VMIs are deleted.
    pub fn run_launcher_pods(&self, template: Value) {
        let shared = self.shared.clone();
        let mut events = shared.store().subscribe();
        tokio::spawn(async move {
            while let Some(event) = store::next_event(&mut events, "launcher Pod task").await {
                if event.key.gvr != Gvr::vmi() {
                    continue;
                }
                match event.kind {
                    store::EventType::Added => {
                        let pod = kubevirt::launcher_pod(&template, &event.object);
                        let response = write::create_pod(&shared, &event.key.namespace, pod).await;
                        if let Err(message) = response {
                            eprintln!(
                                "fake API server: launcher Pod for VMI {} refused: {message}",
                                event.key.name
                            );
                        }
                    }
                    store::EventType::Deleted => {
                        let mut store = shared.store();
                        let pods = store.list(&Gvr::new("", "v1", "pods"), &event.key.namespace);
                        for pod in pods {
                            if pod["metadata"]["labels"]["kubevirt.io/created-by"]
                                == event.object["metadata"]["uid"]
                                && let Some(name) = pod["metadata"]["name"].as_str()
                            {
                                let key = Key::new(
                                    Gvr::new("", "v1", "pods"),
                                    &event.key.namespace,
                                    name,
                                );
                                store.delete(&key);
                            }
                        }
                    }
                    store::EventType::Modified => {}
                }
            }
        });
    }

    /// Plays CDI's importer for every new DataVolume (see `cdi`), one status change per
    /// `step`.
    pub fn run_cdi(&self, step: Duration) {
        cdi::run(self.shared.clone(), step);
    }

    /// Every change to objects of `gvr` so far, oldest first, as a watch from the start sees
    /// them: lets a test assert on states that came and went.
    pub fn history(&self, gvr: &Gvr) -> Vec<(store::EventType, Value)> {
        self.shared
            .store()
            .since(0)
            .into_iter()
            .filter(|e| &e.key.gvr == gvr)
            .map(|e| (e.kind, e.object))
            .collect()
    }

    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }
}

#[cfg(test)]
mod tests;
