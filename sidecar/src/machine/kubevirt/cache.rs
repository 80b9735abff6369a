//! The one VM and its VMI, kept current by two watches. Every read of the machine is
//! answered from here, so a power-status poll costs no API call.
//!
//! Both watches list and watch with `fieldSelector=metadata.name=<vm>`, which a Role with
//! `resourceNames: [<vm>]` allows (a plain list would be forbidden). kube's watcher resumes
//! from the last resourceVersion (kept current by bookmarks) and relists when it must.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::errors::{Failure, classify};
use super::types::{VirtualMachine, VirtualMachineInstance};
use crate::machine::MachineError;

/// A failed watch is retried after 0.8 s, doubling up to 8 s (each jittered, see [`jittered`]).
/// client-go's reflector starts at the same 800 ms (`tools/cache/reflector.go`,
/// `NewExponentialBackoffManager(800ms, 30s, ...)`); its 30 s cap would leave a BMC blind for
/// up to a minute after the API server is back, so ours stops at 8 s. Measured with 1,000
/// sidecars through a 30 s outage (`e2e/outage.sh`): 100 ms and 3 s had them retry ~3,000
/// times a second in the outage's first seconds (every watch cut at once, retried in step
/// within 150 ms) and ~660 a second after.
const RETRY_FIRST: Duration = Duration::from_millis(800);
const RETRY_MAX: Duration = Duration::from_secs(8);

/// What the BMC knows about its VM right now.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub vm: Option<Arc<VirtualMachine>>,
    pub vmi: Option<Arc<VirtualMachineInstance>>,
    pub vm_synced: bool,
    pub vmi_synced: bool,
    /// The last watch failure, cleared by the next success.
    pub vm_error: Option<MachineError>,
    pub vmi_error: Option<MachineError>,
    /// UID of the last VMI seen `Succeeded` without a deletion asked for: its guest powered
    /// itself off. Kept after the VMI is gone, because the watch may deliver its replacement
    /// before a reconcile sees the finished one.
    pub guest_ended: Option<GuestEnded>,
}

/// A VMI whose guest ended it: powered off, or rebooted under `rebootPolicy: Terminate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestEnded {
    pub uid: String,
    /// Its spec had `rebootPolicy: Terminate`: KubeVirt ends such a VMI on the guest's reboot
    /// as it does on its shutdown (both Succeeded), so its end is taken for a reboot.
    pub reboot_terminates: bool,
}

impl Snapshot {
    pub fn synced(&self) -> bool {
        self.vm_synced && self.vmi_synced
    }

    pub fn error(&self) -> Option<&MachineError> {
        self.vm_error.as_ref().or(self.vmi_error.as_ref())
    }
}

/// Owns the watch tasks; dropping it stops them.
pub struct Cache {
    state: watch::Sender<Snapshot>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Which object a watch keeps in the snapshot.
trait Slot: Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static {
    fn put(snapshot: &mut Snapshot, object: Option<Arc<Self>>);
    fn get(snapshot: &Snapshot) -> Option<&Arc<Self>>;
    fn synced(snapshot: &mut Snapshot);
    fn error(snapshot: &mut Snapshot, error: Option<MachineError>);
    fn has_error(snapshot: &Snapshot) -> bool;
    fn resource_version(&self) -> Option<&str>;
}

impl Slot for VirtualMachine {
    fn put(snapshot: &mut Snapshot, object: Option<Arc<Self>>) {
        snapshot.vm = object;
    }
    fn get(snapshot: &Snapshot) -> Option<&Arc<Self>> {
        snapshot.vm.as_ref()
    }
    fn synced(snapshot: &mut Snapshot) {
        snapshot.vm_synced = true;
    }
    fn error(snapshot: &mut Snapshot, error: Option<MachineError>) {
        snapshot.vm_error = error;
    }
    fn has_error(snapshot: &Snapshot) -> bool {
        snapshot.vm_error.is_some()
    }
    fn resource_version(&self) -> Option<&str> {
        self.metadata.resource_version.as_deref()
    }
}

impl Slot for VirtualMachineInstance {
    fn put(snapshot: &mut Snapshot, object: Option<Arc<Self>>) {
        if let Some(vmi) = &object
            && vmi.phase() == "Succeeded"
            && !vmi.is_terminating()
        {
            snapshot.guest_ended = vmi.uid().map(|uid| GuestEnded {
                uid: uid.to_owned(),
                reboot_terminates: vmi.spec.domain.rest.get("rebootPolicy")
                    == Some(&serde_json::json!("Terminate")),
            });
        }
        snapshot.vmi = object;
    }
    fn get(snapshot: &Snapshot) -> Option<&Arc<Self>> {
        snapshot.vmi.as_ref()
    }
    fn synced(snapshot: &mut Snapshot) {
        snapshot.vmi_synced = true;
    }
    fn error(snapshot: &mut Snapshot, error: Option<MachineError>) {
        snapshot.vmi_error = error;
    }
    fn has_error(snapshot: &Snapshot) -> bool {
        snapshot.vmi_error.is_some()
    }
    fn resource_version(&self) -> Option<&str> {
        self.metadata.resource_version.as_deref()
    }
}

impl Cache {
    pub fn start(client: kube::Client, namespace: &str, name: &str) -> Cache {
        let (state, _) = watch::channel(Snapshot::default());
        let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), namespace);
        let vmis: Api<VirtualMachineInstance> = Api::namespaced(client, namespace);
        let tasks = vec![
            tokio::spawn(run_watch(vms, name.to_owned(), state.clone())).abort_handle(),
            tokio::spawn(run_watch(vmis, name.to_owned(), state.clone())).abort_handle(),
        ];
        Cache { state, tasks }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.state.subscribe()
    }

    /// Takes an object a write returned, so a read right after the write sees it even before
    /// the watch delivers it. Never goes back to an older version.
    pub fn offer_vm(&self, vm: VirtualMachine) {
        offer(&self.state, vm);
    }

    /// Waits until `ready` holds for the snapshot, or `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        ready: impl Fn(&Snapshot) -> bool,
    ) -> Option<Snapshot> {
        let mut rx = self.state.subscribe();
        let result = tokio::time::timeout(timeout, rx.wait_for(|s| ready(s))).await;
        match result {
            Ok(Ok(snapshot)) => Some(snapshot.clone()),
            _ => None,
        }
    }
}

fn newer(candidate: Option<&str>, current: Option<&str>) -> bool {
    match (
        candidate.and_then(|v| v.parse::<u64>().ok()),
        current.and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(a), Some(b)) => a > b,
        // resourceVersions are opaque: when they are not numbers, the latest arrival wins.
        _ => true,
    }
}

fn newer_than_held<K: Slot>(snapshot: &Snapshot, object: &K) -> bool {
    let held = K::get(snapshot).and_then(|o| o.resource_version().map(str::to_owned));
    newer(object.resource_version(), held.as_deref())
}

fn offer<K: Slot>(state: &watch::Sender<Snapshot>, object: K) {
    state.send_if_modified(|snapshot| {
        if newer_than_held(snapshot, &object) {
            K::put(snapshot, Some(Arc::new(object)));
            true
        } else {
            false
        }
    });
}

async fn run_watch<K>(api: Api<K>, name: String, state: watch::Sender<Snapshot>)
where
    K: Slot + kube::Resource<DynamicType = ()>,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, config).boxed();
    let mut listed: Option<K> = None;
    let mut retry = RETRY_FIRST;
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                retry = RETRY_FIRST;
                state.send_if_modified(|s| {
                    let had_error = K::has_error(s);
                    K::error(s, None);
                    had_error
                });
                match event {
                    watcher::Event::Init => listed = None,
                    watcher::Event::InitApply(object) => listed = Some(object),
                    watcher::Event::InitDone => state.send_modify(|s| {
                        let listed = listed.take();
                        if listed.as_ref().is_none_or(|o| newer_than_held(s, o)) {
                            K::put(s, listed.map(Arc::new));
                        }
                        K::synced(s);
                    }),
                    // Never back to an older version: a watch replays the history from where
                    // it started, which may be older than what one of our writes returned
                    // (`offer_vm`). Put back, that older VM showed a power-on the BMC had
                    // finished as unfinished, and the BMC unpaused a VMI just paused by hand
                    // (kubevirt_faults, under load).
                    watcher::Event::Apply(object) => offer(&state, object),
                    watcher::Event::Delete(_) => state.send_modify(|s| K::put(s, None)),
                }
            }
            Err(error) => {
                let what = format!("watch {} {name}", K::kind(&()));
                let error = describe_watch_error(&error, &what);
                tracing::warn!(%error, "watch failed; retrying");
                state.send_modify(|s| K::error(s, Some(error)));
                tokio::time::sleep(jittered(retry)).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Half to one and a half times `retry`, at random: after an API outage every sidecar of the
/// cluster sees its watch fail at the same moment, and without jitter they would all retry in
/// step (client-go's reflector jitters its backoff for the same reason).
fn jittered(retry: Duration) -> Duration {
    use rand::Rng;
    retry.mul_f64(rand::rng().random_range(0.5..1.5))
}

fn describe_watch_error(error: &watcher::Error, what: &str) -> MachineError {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => match classify(e, what) {
            Failure::Fatal(error) => error,
            Failure::Conflict => MachineError::Unavailable(format!("{what}: {e}")),
        },
        other => MachineError::Unavailable(format!("{what}: {other}")),
    }
}

#[cfg(test)]
mod jitter_tests {
    use super::*;

    #[test]
    fn retries_are_spread_around_the_backoff() {
        let delays: Vec<Duration> = (0..200).map(|_| jittered(RETRY_MAX)).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= RETRY_MAX / 2 && *d < RETRY_MAX * 3 / 2)
        );
        // Not in step: 200 draws spread over more than half of the range.
        let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(*max - *min > RETRY_MAX / 2, "{min:?}..{max:?}");
    }
}

#[cfg(test)]
mod offer_tests {
    use super::*;

    fn vm(resource_version: &str) -> VirtualMachine {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "vm1", "resourceVersion": resource_version}
        }))
        .unwrap()
    }

    fn held(state: &watch::Sender<Snapshot>) -> Option<String> {
        state
            .borrow()
            .vm
            .as_ref()?
            .resource_version()
            .map(str::to_owned)
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let state = watch::channel(Snapshot::default()).0;
        offer(&state, vm("7"));
        // The watch replaying its history from before our write.
        offer(&state, vm("5"));
        assert_eq!(held(&state).as_deref(), Some("7"));
        offer(&state, vm("9"));
        assert_eq!(held(&state).as_deref(), Some("9"));
    }
}
