//! Wiring: watch VMs (and what they own, media DataVolumes included, their launcher Pods,
//! namespaces), reconcile each, requeue with per-VM exponential backoff on errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::reflector;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use rand::Rng;

use super::apply::{self, ApplyError, Existing, Outcome, Seen};
use super::cache;
use super::cdi::{self, CdiState};
use super::children::VmRef;
use super::lease::{ElectionConfig, Elector};
use super::plan::{self, Fresh, Observed, Policy};
use crate::metrics::Metrics;
use crate::names;

/// Resync period: catches what no watch reports (e.g. the user's credentials Secret changing).
const RESYNC: Duration = Duration::from_secs(300);
/// How long the VM watch waits for the namespace cache before it starts regardless.
const NAMESPACES_READY_WAIT: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub policy: Policy,
    pub cdi: CdiState,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Launcher Pods of prepared VMs, pruned to what `cache::launcher` reads.
    pods: Store<Pod>,
    service_accounts: Store<ServiceAccount>,
    roles: Store<Role>,
    role_bindings: Store<RoleBinding>,
    services: Store<Service>,
    /// The media DataVolumes, filled by the DataVolume watch while CDI is served.
    data_volumes: cdi::DataVolumeCache,
    failures: Mutex<HashMap<(String, String), u32>>,
    /// Per VM, the resourceVersion its last successful patch was computed from.
    patched_from: Mutex<HashMap<(String, String), String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("VM object lacks {0}")]
    Malformed(&'static str),
}

impl ReconcileError {
    fn metric_label(&self) -> &'static str {
        match self {
            ReconcileError::Apply(e) => e.metric_label(),
            ReconcileError::Malformed(_) => "malformed-vm",
        }
    }
}

/// Backoff of the watches that trigger reconciles. kube-runtime applies one backoff to all
/// of them together, so after an API server restart every watch's stale error pauses all
/// watches in turn; with its default (0.8 s doubling to 30 s, reset only after 120 s) the
/// controller was blind for over a minute after a 10 s outage. Short and capped instead:
/// 100 ms doubling to 2 s, reset by any event.
#[derive(Debug, Clone, Default)]
pub struct TriggerBackoff {
    failures: u32,
}

const TRIGGER_BACKOFF_MIN: Duration = Duration::from_millis(100);
const TRIGGER_BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Iterator for TriggerBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = TRIGGER_BACKOFF_MIN
            .saturating_mul(1u32 << self.failures.min(16))
            .min(TRIGGER_BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for TriggerBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Exponential: 2 s, 4 s, 8 s ... capped at 5 min.
pub fn backoff(failures: u32) -> Duration {
    BACKOFF_MIN
        .saturating_mul(1u32 << failures.min(16))
        .min(BACKOFF_MAX)
}

/// 24 random bytes, base64: 32 printable characters, ~192 bits.
pub fn random_secret() -> String {
    use base64::Engine;
    // 15 bytes (120 bits) encode to exactly 20 characters: IPMI 2.0 passwords hold at most
    // 20 bytes, and ipmitool refuses a longer one before sending anything.
    let mut bytes = [0u8; 15];
    rand::rng().fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn vm_ref(vm: &DynamicObject) -> Result<VmRef, ReconcileError> {
    Ok(VmRef {
        name: vm
            .metadata
            .name
            .clone()
            .ok_or(ReconcileError::Malformed("metadata.name"))?,
        namespace: vm
            .metadata
            .namespace
            .clone()
            .ok_or(ReconcileError::Malformed("metadata.namespace"))?,
        uid: vm
            .metadata
            .uid
            .clone()
            .ok_or(ReconcileError::Malformed("metadata.uid"))?,
    })
}

/// What one reconcile decided and wrote.
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub plan: plan::Plan,
    pub outcome: Outcome,
}

/// One reconcile with an explicit client, reading everything from the API server (the tests'
/// path; the controller reads the same from its caches).
pub async fn reconcile_vm(
    client: &Client,
    vm: &DynamicObject,
    recorder: Option<&Recorder>,
    fresh: &Fresh,
    policy: Policy,
) -> Result<Reconciled, ReconcileError> {
    let vm_ref = vm_ref(vm)?;
    let value = serde_json::to_value(vm).map_err(|_| ReconcileError::Malformed("JSON form"))?;
    let (observed, existing) = apply::observe(client, &value, &vm_ref).await?;
    reconcile_with(client, vm, observed, &existing, recorder, fresh, policy).await
}

/// Decide and write from what is already known: no read of the API server except for what
/// `existing` leaves unknown.
pub async fn reconcile_with(
    client: &Client,
    vm: &DynamicObject,
    mut observed: Observed,
    existing: &Existing,
    recorder: Option<&Recorder>,
    fresh: &Fresh,
    policy: Policy,
) -> Result<Reconciled, ReconcileError> {
    let vm_ref = vm_ref(vm)?;
    let value = serde_json::to_value(vm).map_err(|_| ReconcileError::Malformed("JSON form"))?;
    observed.policy = policy;
    let plan = plan::plan(&value, &vm_ref, &observed, fresh);
    let basis = vm.metadata.resource_version.as_deref();
    let outcome = apply::execute(client, &vm_ref, &plan, existing, basis, recorder).await?;
    Ok(Reconciled { plan, outcome })
}

/// How long a reconcile waits at start for the caches' first lists; past that it reads what a
/// cache lacks from the API server (a watch that cannot start must not stop the controller).
const CACHE_WAIT: Duration = Duration::from_secs(30);

impl Context {
    async fn caches_ready(&self) {
        let all = async {
            let _ = self.namespaces.wait_until_ready().await;
            let _ = self.pods.wait_until_ready().await;
            let _ = self.service_accounts.wait_until_ready().await;
            let _ = self.roles.wait_until_ready().await;
            let _ = self.role_bindings.wait_until_ready().await;
            let _ = self.services.wait_until_ready().await;
        };
        let _ = tokio::time::timeout(CACHE_WAIT, all).await;
    }

    /// The children as the caches hold them. Our watches select on our managed-by label, so a
    /// name missing from a cache is `Unknown` (someone else's object, or not delivered yet),
    /// never `Absent`: the owner check then asks the API server.
    fn existing(&self, vm_ref: &VmRef) -> Existing {
        fn seen<K>(store: &Store<K>, name: String, ns: &str) -> Seen<K>
        where
            K: kube::Resource<DynamicType = ()> + Clone + 'static,
        {
            store
                .get(&ObjectRef::new(&name).within(ns))
                .map_or(Seen::Unknown, |k| Seen::Present(k.as_ref().clone()))
        }
        let (n, ns) = (&vm_ref.name, vm_ref.namespace.as_str());
        Existing {
            service_account: seen(&self.service_accounts, names::service_account(n), ns),
            role: seen(&self.roles, names::role(n), ns),
            role_binding: seen(&self.role_bindings, names::role(n), ns),
            service: seen(&self.services, names::service(n), ns),
            data_volume: Seen::Unknown,
        }
    }
}

/// The controller's reconcile: everything from the caches, so a VM whose objects already are
/// as they should be costs no API request at all, and a VM that neither opts in nor was
/// prepared is decided before anything is looked up.
async fn reconcile_cached(
    ctx: &Context,
    vm: &DynamicObject,
    fresh: &Fresh,
) -> Result<Reconciled, ReconcileError> {
    let vm_ref = vm_ref(vm)?;
    let value = serde_json::to_value(vm).map_err(|_| ReconcileError::Malformed("JSON form"))?;
    // Ready once the first lists are in; the reflectors live as long as the controller, so
    // this only waits at start.
    ctx.caches_ready().await;
    let cached = ctx
        .namespaces
        .get(&ObjectRef::new(&vm_ref.namespace))
        .map(|ns| ns.metadata.labels.clone().unwrap_or_default());
    let namespace_labels = match cached {
        Some(labels) if plan::untouched(&value, &labels) => {
            return Ok(Reconciled {
                plan: plan::Plan::Nothing,
                outcome: Outcome::default(),
            });
        }
        Some(labels) => labels,
        // A namespace the cache has not seen yet: ask.
        None => Api::<Namespace>::all(ctx.client.clone())
            .get(&vm_ref.namespace)
            .await
            .map_err(|source| ApplyError {
                step: "get-namespace",
                source,
            })?
            .metadata
            .labels
            .unwrap_or_default(),
    };
    // Opting in (through a namespace label added since it was cached) with its spec pruned:
    // the plan needs all of it.
    let whole;
    let (vm, value) = if cache::spec_pruned(vm) {
        whole = Api::<DynamicObject>::namespaced_with(
            ctx.client.clone(),
            &vm_ref.namespace,
            &apply::vm_resource(),
        )
        .get(&vm_ref.name)
        .await
        .map_err(|source| ApplyError {
            step: "get-virtualmachine",
            source,
        })?;
        let value =
            serde_json::to_value(&whole).map_err(|_| ReconcileError::Malformed("JSON form"))?;
        (&whole, value)
    } else {
        (vm, value)
    };
    let pods = ctx.pods.state();
    let launcher = cache::launcher(
        pods.iter().map(|p| p.as_ref()),
        &vm_ref.namespace,
        &vm_ref.name,
    );
    let mut existing = ctx.existing(&vm_ref);
    let data_volume = if apply::wants_data_volume(&plan::vm_annotations(&value)) {
        let cached = ctx
            .data_volumes
            .get(&vm_ref.namespace, &names::media_data_volume(&vm_ref.name));
        let (value, seen) = match cached {
            Some(dv) => apply::data_volume_seen(Some(dv)),
            None => apply::observe_data_volume(&ctx.client, &vm_ref).await?,
        };
        existing.data_volume = seen;
        value
    } else {
        None
    };
    let observed = Observed {
        namespace_labels,
        launcher,
        data_volume,
        policy: ctx.policy.clone(),
        cdi_missing: ctx.cdi.missing(),
    };
    reconcile_with(
        &ctx.client,
        vm,
        observed,
        &existing,
        Some(&ctx.recorder),
        fresh,
        ctx.policy.clone(),
    )
    .await
}

/// Resync, spread over ±10 % so that VMs reconciled together at start do not come back
/// together every period.
fn resync() -> Duration {
    RESYNC.mul_f64(rand::rng().random_range(0.9..1.1))
}

fn key_of(vm: &DynamicObject) -> (String, String) {
    (
        vm.metadata.namespace.clone().unwrap_or_default(),
        vm.metadata.name.clone().unwrap_or_default(),
    )
}

async fn reconcile(vm: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let key = key_of(&vm);
    let rv = vm.metadata.resource_version.clone().unwrap_or_default();
    // We patched this very version of the VM: the cached copy is older than the API server's,
    // and a decision from it would repeat our write with a stale resourceVersion (409). The
    // watch event of our patch triggers the next reconcile.
    {
        let mut patched = ctx.patched_from.lock().expect("lock");
        match patched.get(&key) {
            Some(from) if *from == rv => {
                ctx.metrics.reconcile("stale-cache");
                return Ok(Action::requeue(resync()));
            }
            Some(_) => {
                patched.remove(&key);
            }
            None => {}
        }
    }
    let fresh = Fresh {
        password: random_secret(),
        session_key: random_secret(),
    };
    let result = reconcile_cached(&ctx, &vm, &fresh).await;
    match result {
        Ok(done) => {
            ctx.failures.lock().expect("lock").remove(&key);
            if done.outcome.vm_patched {
                ctx.patched_from.lock().expect("lock").insert(key, rv);
            }
            ctx.metrics.reconcile(match done.plan {
                plan::Plan::Nothing => "not-opted-in",
                plan::Plan::Invalid { .. } => "invalid",
                plan::Plan::OptedIn { .. } if done.outcome.writes == 0 => "unchanged",
                plan::Plan::OptedIn { .. } => "opted-in",
                plan::Plan::OptOut { .. } => "opted-out",
            });
            Ok(match done.plan {
                // Nothing to keep in step: the VM's own change or its namespace's label
                // change triggers the next reconcile, and a timer per VM of the cluster held
                // 10,000 entries in the scheduler for VMs that never opt in.
                plan::Plan::Nothing => Action::await_change(),
                _ => Action::requeue(resync()),
            })
        }
        Err(e) => Err(e),
    }
}

/// After a 409 the VM (or a child) changed under us: retry soon with what the watch now
/// shows, without counting it as a failure (a conflict is another writer, not an error).
const CONFLICT_RETRY_MIN: Duration = Duration::from_millis(200);
const CONFLICT_RETRY_MAX: Duration = Duration::from_millis(1200);

fn conflict_retry() -> Duration {
    rand::rng().random_range(CONFLICT_RETRY_MIN..CONFLICT_RETRY_MAX)
}

fn error_policy(vm: Arc<DynamicObject>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    if let ReconcileError::Apply(e) = error
        && e.is_conflict()
    {
        ctx.metrics.reconcile("conflict");
        let delay = conflict_retry();
        tracing::debug!(vm = ?vm.metadata.name, namespace = ?vm.metadata.namespace, %error, ?delay, "conflict; retrying");
        return Action::requeue(delay);
    }
    let key = (
        vm.metadata.namespace.clone().unwrap_or_default(),
        vm.metadata.name.clone().unwrap_or_default(),
    );
    let mut failures = ctx.failures.lock().expect("lock");
    let n = failures.entry(key).or_default();
    let delay = backoff(*n);
    *n = n.saturating_add(1);
    ctx.metrics.reconcile("error");
    ctx.metrics.reconcile_error(error.metric_label());
    tracing::warn!(vm = ?vm.metadata.name, namespace = ?vm.metadata.namespace, %error, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// Runs the controller until SIGTERM; with `election`, only while this replica holds the
/// leader Lease (it waits as a candidate otherwise, and releases the Lease on SIGTERM so the
/// other replica takes over at once).
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    instance: String,
    election: Option<ElectionConfig>,
    policy: Policy,
    concurrency: u16,
) {
    let Some(config) = election else {
        tokio::select! {
            _ = run_controller(client, metrics, instance, policy.clone(), concurrency) => {}
            _ = kubevirt_bmc_runtime::exit::shutdown_signal() => {}
        }
        return;
    };
    let mut elector = Elector::new(client.clone(), config);
    let shutdown = kubevirt_bmc_runtime::exit::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = elector.acquire() => {}
            _ = &mut shutdown => return,
        }
        tracing::info!(identity = %elector.config().identity, "leader Lease acquired; reconciling");
        metrics.leader(true);
        let lost = tokio::select! {
            _ = run_controller(client.clone(), metrics.clone(), instance.clone(), policy.clone(), concurrency) => false,
            _ = elector.hold() => true,
            _ = &mut shutdown => false,
        };
        metrics.leader(false);
        if !lost {
            if let Err(e) = elector.release().await {
                tracing::warn!(error = %e, "cannot release the leader Lease");
            }
            return;
        }
        // The controller future is dropped here: no reconcile of ours starts after the renew
        // deadline, which ends before any other replica may take the Lease.
        tracing::warn!("leader Lease lost; reconciling stopped, standing by as a candidate");
    }
}

/// Reconciles at most this many VMs at a time unless told otherwise: enough to keep the API
/// server busy during a cold start (a reconcile mostly waits on it), few enough that a burst
/// of events does not become a burst of concurrent writes.
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// A watch of our own children (by the managed-by label), pruned, into a cache; its events
/// trigger reconciles of the owner VM.
fn owned_cache<K>(
    client: &Client,
    prune: fn(&mut K),
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let managed = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        names::WEBHOOK_NAME
    ));
    let stream = reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), managed).modify(prune),
    )
    .backoff(TriggerBackoff::default())
    .touched_objects();
    (store, stream)
}

async fn run_controller(
    client: Client,
    metrics: Arc<Metrics>,
    instance: String,
    policy: Policy,
    concurrency: u16,
) {
    let ar = apply::vm_resource();
    let vms = Api::<DynamicObject>::all_with(client.clone(), &ar);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: names::WEBHOOK_NAME.to_owned(),
            instance: Some(instance),
        },
    );
    // Namespaces: only their labels matter (the namespace-wide opt-in), so a metadata-only
    // watch, cached; reconciles read labels from here instead of a GET per VM.
    let (namespaces, ns_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let ns_events = reflector(
        ns_writer,
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
        )
        .modify(|ns| cache::prune_meta(&mut ns.metadata)),
    )
    .backoff(TriggerBackoff::default())
    .touched_objects();
    // Known before the first reconcile, so no VM meets a DataVolume create that cannot work;
    // `cdi::triggers` keeps it current. Unknown (API trouble) counts as served: the create
    // then fails and is retried like any other write.
    let cdi_state = CdiState::default();
    if let Ok(false) = cdi::served(&client).await {
        cdi_state.set_missing(true);
    }
    // Launcher Pods of VMs we prepared only (our label, which KubeVirt copies from the VM
    // template): the cluster's other launcher Pods cause no event, no reconcile and take no
    // memory. Whole objects, pruned to phase, IP and the sidecar's readiness, so a reconcile
    // reads its VM's Pod from here instead of listing Pods (a quorum read) every time.
    let (pods, pod_writer) = reflector::store::<Pod>();
    let pod_events = reflector(
        pod_writer,
        watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().labels(&format!(
                "{}={},{}={}",
                names::LAUNCHER_LABEL,
                names::LAUNCHER_VALUE,
                names::OPT_IN_LABEL,
                names::OPT_IN_VALUE
            )),
        )
        .modify(cache::prune_pod),
    )
    .backoff(TriggerBackoff::default())
    .touched_objects();
    let (service_accounts, sa_events) = owned_cache(&client, cache::prune_service_account);
    let (roles, role_events) = owned_cache(&client, cache::prune_role);
    let (role_bindings, binding_events) = owned_cache(&client, cache::prune_role_binding);
    let (services, service_events) = owned_cache(&client, cache::prune_service);
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        metrics,
        policy,
        cdi: cdi_state.clone(),
        namespaces,
        pods,
        service_accounts,
        roles,
        role_bindings,
        services,
        data_volumes: cdi::DataVolumeCache::default(),
        failures: Mutex::default(),
        patched_from: Mutex::default(),
    });
    // The VMs themselves, pruned before they enter the controller's cache: 10,000 VMs' status
    // and managedFields were most of its memory, then the specs of VMs that do not opt in.
    let vm_writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
    let vm_store = vm_writer.as_reader();
    let ns_for_prune = ctx.namespaces.clone();
    // The VM list waits for the namespace cache: a VM pruned while its namespace is unknown
    // keeps its spec (it might opt in through the label) until its next change, so starting
    // both watches together kept every VM of the cluster whole (~5 KiB each). Bounded, so a
    // namespace watch that cannot start does not hold back the VMs' own opt-in.
    let namespaces_ready = ctx.namespaces.clone();
    let vm_watch = futures::stream::once(async move {
        let _ =
            tokio::time::timeout(NAMESPACES_READY_WAIT, namespaces_ready.wait_until_ready()).await;
    })
    .flat_map(move |()| watcher(vms.clone(), watcher::Config::default()));
    let vm_events = reflector(
        vm_writer,
        vm_watch.modify(move |vm| {
            let namespace_opts_in = vm.metadata.namespace.as_deref().and_then(|ns| {
                let ns = ns_for_prune.get(&ObjectRef::new(ns))?;
                Some(plan::namespace_opts_in(
                    &ns.metadata.labels.clone().unwrap_or_default(),
                ))
            });
            cache::prune_vm(vm, namespace_opts_in);
        }),
    )
    .applied_objects();
    let controller = Controller::for_stream_with(vm_events, vm_store, ar.clone())
        .with_config(controller::Config::default().concurrency(concurrency))
        .trigger_backoff(TriggerBackoff::default());
    let store = controller.store();
    let ns_store = store.clone();
    let ar_pods = ar.clone();
    let ar_ns = ar.clone();
    let dv_resource = apply::data_volume_resource();
    let managed =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=kubevirt-bmc-webhook");
    controller
        .owns_stream(sa_events)
        .owns_stream(role_events)
        .owns_stream(binding_events)
        // No watch on Secrets, not even metadata-only: the controller may not list or watch
        // them (rbac.yaml); what it created is recorded on the VM.
        .owns_stream(service_events)
        // The media import's progress and failure reach the VM only through a reconcile.
        // Watched only while API discovery finds CDI (`cdi::triggers`).
        .owns_stream_with(
            cdi::triggers(
                client.clone(),
                managed,
                cdi_state.clone(),
                ctx.policy.cdi_recheck.unwrap_or(cdi::RECHECK),
                ctx.data_volumes.clone(),
            ),
            dv_resource.clone(),
        )
        .reconcile_all_on(cdi_state.changes())
        .watches_stream(pod_events, move |pod: Pod| {
            // The VMI (= VM) name; KubeVirt's `vm.kubevirt.io/name` label is the hostname.
            let vm = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(names::DOMAIN_ANNOTATION))
                .or_else(|| pod.metadata.labels.as_ref()?.get(names::VM_NAME_LABEL))?
                .clone();
            Some(
                ObjectRef::new_with(&vm, ar_pods.clone())
                    .within(pod.metadata.namespace.as_deref()?),
            )
        })
        .watches_stream(ns_events, move |ns: PartialObjectMeta<Namespace>| {
            let name = ns.metadata.name.clone().unwrap_or_default();
            ns_store
                .state()
                .into_iter()
                .filter(|vm| vm.metadata.namespace.as_deref() == Some(name.as_str()))
                .map(|vm| ObjectRef::from_obj_with(vm.as_ref(), ar_ns.clone()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use kube::runtime::utils::Backoff;

    use super::*;

    #[test]
    fn trigger_backoff_is_short_capped_and_resets() {
        let mut backoff = TriggerBackoff::default();
        let delays: Vec<Duration> = backoff.by_ref().take(7).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[4], Duration::from_millis(1600));
        assert_eq!(delays[6], Duration::from_secs(2));
        // Seven stale watch errors in a row cost under 8 s in all.
        assert!(delays.iter().sum::<Duration>() < Duration::from_secs(8));
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(100)));
    }
}
