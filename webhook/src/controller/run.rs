//! Wiring: watch VMs (and what they own, media DataVolumes included, their launcher Pods,
//! namespaces), reconcile each, requeue with per-VM exponential backoff on errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use kube::Client;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::reflector;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use rand::Rng;

use super::apply::{self, ApplyError};
use super::cdi::{self, CdiState};
use super::children::VmRef;
use super::lease::{ElectionConfig, Elector};
use super::plan::{self, Fresh, Policy};
use crate::metrics::Metrics;
use crate::names;

/// Resync period: catches what no watch reports (e.g. the user's credentials Secret changing).
const RESYNC: Duration = Duration::from_secs(300);
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub policy: Policy,
    pub cdi: CdiState,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    failures: Mutex<HashMap<(String, String), u32>>,
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

/// One reconcile with an explicit client; what the controller loop and the tests call.
pub async fn reconcile_vm(
    client: &Client,
    vm: &DynamicObject,
    recorder: Option<&Recorder>,
    fresh: &Fresh,
    policy: Policy,
) -> Result<plan::Plan, ReconcileError> {
    let vm_ref = vm_ref(vm)?;
    let value = serde_json::to_value(vm).map_err(|_| ReconcileError::Malformed("JSON form"))?;
    let mut observed = apply::observe(client, &value, &vm_ref).await?;
    // CDI counts as served here (one-off calls and tests); the controller's loop reads its
    // `CdiState`, which discovery keeps current.
    observed.policy = policy;
    let plan = plan::plan(&value, &vm_ref, &observed, fresh);
    apply::execute(client, &vm_ref, &plan, recorder).await?;
    Ok(plan)
}

/// The controller's reconcile: namespace labels from the cache, and no API call at all for a
/// VM that neither opts in nor was prepared.
async fn reconcile_cached(
    ctx: &Context,
    vm: &DynamicObject,
    fresh: &Fresh,
) -> Result<plan::Plan, ReconcileError> {
    let vm_ref = vm_ref(vm)?;
    let value = serde_json::to_value(vm).map_err(|_| ReconcileError::Malformed("JSON form"))?;
    // Ready once the first namespace list is in; the reflector lives as long as the
    // controller, so this only waits at start.
    let _ = ctx.namespaces.wait_until_ready().await;
    let cached = ctx
        .namespaces
        .get(&ObjectRef::new(&vm_ref.namespace))
        .map(|ns| ns.metadata.labels.clone().unwrap_or_default());
    let mut observed = match cached {
        Some(labels) if plan::untouched(&value, &labels) => return Ok(plan::Plan::Nothing),
        Some(labels) => apply::observe_in(&ctx.client, &value, &vm_ref, labels).await?,
        // A namespace the cache has not seen yet: ask.
        None => apply::observe(&ctx.client, &value, &vm_ref).await?,
    };
    observed.policy = ctx.policy.clone();
    observed.cdi_missing = ctx.cdi.missing();
    let plan = plan::plan(&value, &vm_ref, &observed, fresh);
    apply::execute(&ctx.client, &vm_ref, &plan, Some(&ctx.recorder)).await?;
    Ok(plan)
}

async fn reconcile(vm: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let fresh = Fresh {
        password: random_secret(),
        session_key: random_secret(),
    };
    let result = reconcile_cached(&ctx, &vm, &fresh).await;
    let key = (
        vm.metadata.namespace.clone().unwrap_or_default(),
        vm.metadata.name.clone().unwrap_or_default(),
    );
    match result {
        Ok(plan) => {
            ctx.failures.lock().expect("lock").remove(&key);
            ctx.metrics.reconcile(match plan {
                plan::Plan::Nothing => "not-opted-in",
                plan::Plan::Invalid { .. } => "invalid",
                plan::Plan::OptedIn { .. } => "opted-in",
                plan::Plan::OptOut { .. } => "opted-out",
            });
            Ok(Action::requeue(RESYNC))
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
) {
    let Some(config) = election else {
        tokio::select! {
            _ = run_controller(client, metrics, instance, policy.clone()) => {}
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
            _ = run_controller(client.clone(), metrics.clone(), instance.clone(), policy.clone()) => false,
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

async fn run_controller(client: Client, metrics: Arc<Metrics>, instance: String, policy: Policy) {
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
        ),
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
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        metrics,
        policy,
        cdi: cdi_state.clone(),
        namespaces,
        failures: Mutex::default(),
    });
    let managed =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=kubevirt-bmc-webhook");
    // What we own only triggers reconciles (by ownerReference): metadata is all we need.
    let owned = |cfg: &watcher::Config| cfg.clone();
    let controller = Controller::new_with(vms, watcher::Config::default(), ar.clone())
        .trigger_backoff(TriggerBackoff::default());
    let store = controller.store();
    let ns_store = store.clone();
    let ar_pods = ar.clone();
    let ar_ns = ar.clone();
    let dv_resource = apply::data_volume_resource();
    controller
        .owns_stream(
            watcher(
                Api::<PartialObjectMeta<ServiceAccount>>::all(client.clone()),
                owned(&managed),
            )
            .backoff(TriggerBackoff::default())
            .touched_objects(),
        )
        // No watch on Secrets, not even metadata-only: the controller may not list or watch
        // them (rbac.yaml); what it created is recorded on the VM.
        .owns_stream(
            watcher(
                Api::<PartialObjectMeta<Service>>::all(client.clone()),
                owned(&managed),
            )
            .backoff(TriggerBackoff::default())
            .touched_objects(),
        )
        // The media import's progress and failure reach the VM only through a reconcile.
        // Watched only while API discovery finds CDI (`cdi::triggers`).
        .owns_stream_with(
            cdi::triggers(
                client.clone(),
                owned(&managed),
                cdi_state.clone(),
                ctx.policy.cdi_recheck.unwrap_or(cdi::RECHECK),
            ),
            dv_resource.clone(),
        )
        .reconcile_all_on(cdi_state.changes())
        // Only launcher Pods of VMs we prepared (our label, which KubeVirt copies from the VM
        // template): the cluster's other launcher Pods cause no event and no reconcile.
        .watches_stream(
            watcher(
                Api::<PartialObjectMeta<Pod>>::all(client.clone()),
                watcher::Config::default().labels(&format!(
                    "{}={},{}={}",
                    names::LAUNCHER_LABEL,
                    names::LAUNCHER_VALUE,
                    names::OPT_IN_LABEL,
                    names::OPT_IN_VALUE
                )),
            )
            .backoff(TriggerBackoff::default())
            .touched_objects(),
            move |pod: PartialObjectMeta<Pod>| {
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
            },
        )
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
