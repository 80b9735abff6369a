//! The KubeVirt machine: a real VirtualMachine driven through the KubeVirt API.
//!
//! Reads come from a watch-fed cache (`cache`); decisions are pure (`power`, `boot`); the
//! BMC's memory is annotations on the VM (`annotations`); writes are patches and subresource
//! calls (`api`). A background task reconciles at start and on every change, so a new sidecar
//! finishes what the one before it began.

pub mod annotations;
pub mod api;
pub mod boot;
pub mod cache;
pub mod console;
mod console_bridge;
pub mod errors;
mod machine_impl;
pub mod power;
pub mod types;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;

use self::annotations::BootState;
use self::api::KubevirtApi;
use self::boot::BootLayout;
use self::cache::{Cache, Snapshot};
use self::power::{Desired, Observed, ObservedVmi, Phase, Plan};
use self::types::{VirtualMachine, VirtualMachineInstance};
use super::{BootOverrideEnabled, MachineError, MachineEvent, PowerState, Result};

const EVENT_BUFFER: usize = 256;
/// How long a read waits for the first sync before answering "unavailable".
const SYNC_WAIT: Duration = Duration::from_secs(5);
/// How long a power state the BMC just caused is shown before the cache confirms it.
const EXPECT_FOR: Duration = Duration::from_secs(10);
const RECONCILE_RETRY: Duration = Duration::from_millis(200);
const RECONCILE_RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct KubevirtConfig {
    pub namespace: String,
    pub vm_name: String,
    /// The mounted credentials Secret; `session-key` is read from it.
    pub credentials_dir: Option<PathBuf>,
}

pub(crate) struct Inner {
    api: KubevirtApi,
    cache: Cache,
    config: KubevirtConfig,
    events: broadcast::Sender<MachineEvent>,
    /// The event loop has read a synced state: a change from here on is announced.
    announcing: watch::Sender<bool>,
    /// Writes one at a time: each decision is made on the state the previous one left.
    op_lock: tokio::sync::Mutex<()>,
    expect: Mutex<Option<(PowerState, Instant)>>,
    session_key: Mutex<Option<String>>,
}

/// The BMC's machine for one KubeVirt VM. Dropping it stops its watches and tasks.
pub struct KubevirtMachine {
    inner: Arc<Inner>,
    tasks: Vec<AbortHandle>,
}

impl Drop for KubevirtMachine {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl KubevirtMachine {
    /// Starts watching the VM and its VMI and reconciling; returns at once. Reads wait for the
    /// first sync (up to a few seconds) and then answer "unavailable" while it is missing.
    pub fn start(client: kube::Client, config: KubevirtConfig) -> Self {
        let api = KubevirtApi::new(client.clone(), &config.namespace, &config.vm_name);
        let cache = Cache::start(client, &config.namespace, &config.vm_name);
        let inner = Arc::new(Inner {
            api,
            cache,
            config,
            events: broadcast::channel(EVENT_BUFFER).0,
            announcing: watch::channel(false).0,
            op_lock: tokio::sync::Mutex::new(()),
            expect: Mutex::new(None),
            session_key: Mutex::new(None),
        });
        let tasks = vec![
            tokio::spawn(reconcile_loop(inner.clone())).abort_handle(),
            tokio::spawn(event_loop(inner.clone())).abort_handle(),
        ];
        KubevirtMachine { inner, tasks }
    }

    /// What the cache holds now (for tests, health and metrics).
    pub fn snapshot(&self) -> Snapshot {
        self.inner.cache.snapshot()
    }

    /// Waits until the cache has listed both objects and changes are announced from there.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        // Synced, and the event loop has the state to compare with: on a loaded machine it
        // may run only after a change the caller makes next, which would then go unannounced.
        self.inner
            .cache
            .wait_for(timeout, Snapshot::synced)
            .await
            .is_some()
            && tokio::time::timeout_at(
                deadline,
                self.inner.announcing.subscribe().wait_for(|ready| *ready),
            )
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Prometheus text for `/metrics`.
    pub fn metrics_text(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.inner.api.metrics;
        let snapshot = self.inner.cache.snapshot();
        let power = view(&snapshot)
            .map(|(o, d)| power::power_state(&o, &d))
            .ok();
        let mut text = String::new();
        text.push_str("# TYPE kubevirt_bmc_kubevirt_calls_total counter\n");
        text.push_str(&format!(
            "kubevirt_bmc_kubevirt_calls_total{{result=\"ok\"}} {}\n",
            m.calls_ok.load(Relaxed)
        ));
        text.push_str(&format!(
            "kubevirt_bmc_kubevirt_calls_total{{result=\"error\"}} {}\n",
            m.calls_failed.load(Relaxed)
        ));
        text.push_str("# TYPE kubevirt_bmc_kubevirt_conflicts_total counter\n");
        text.push_str(&format!(
            "kubevirt_bmc_kubevirt_conflicts_total {}\n",
            m.conflicts.load(Relaxed)
        ));
        text.push_str("# TYPE kubevirt_bmc_kubevirt_call_seconds_total counter\n");
        text.push_str(&format!(
            "kubevirt_bmc_kubevirt_call_seconds_total {:.6}\n",
            m.call_micros_total.load(Relaxed) as f64 / 1e6
        ));
        text.push_str("# TYPE kubevirt_bmc_power_on gauge\n");
        let on = match power {
            Some(PowerState::On) => "1",
            Some(_) => "0",
            None => "NaN",
        };
        text.push_str(&format!("kubevirt_bmc_power_on {on}\n"));
        text.push_str("# TYPE kubevirt_bmc_cache_synced gauge\n");
        text.push_str(&format!(
            "kubevirt_bmc_cache_synced {}\n",
            u8::from(snapshot.synced())
        ));
        text
    }
}

/// The power model's view of a snapshot.
fn view(snapshot: &Snapshot) -> Result<(Observed, Desired)> {
    let vm = snapshot.vm.as_ref().ok_or_else(|| {
        MachineError::Unavailable("the VirtualMachine does not exist (or is not visible)".into())
    })?;
    Ok((
        observe(
            vm,
            snapshot.vmi.as_deref(),
            snapshot.guest_ended.as_ref().map(|g| power::GuestEnded {
                uid: g.uid.clone(),
                rebooted: g.reboot_terminates,
            }),
        ),
        annotations::desired(vm),
    ))
}

fn observe(
    vm: &VirtualMachine,
    vmi: Option<&VirtualMachineInstance>,
    guest_ended: Option<power::GuestEnded>,
) -> Observed {
    Observed {
        guest_ended,
        run_strategy_always: vm.spec.run_strategy.as_deref() == Some("Always")
            || (vm.spec.run_strategy.is_none() && vm.spec.running == Some(true)),
        vm_generation: vm.generation(),
        medium: annotations::medium(vm),
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        vmi: vmi.map(|vmi| ObservedVmi {
            uid: vmi.uid().unwrap_or_default().to_owned(),
            phase: Phase::parse(vmi.phase()),
            paused: vmi.is_paused(),
            terminating: vmi.is_terminating(),
            vm_generation: vmi.vm_generation(),
        }),
    }
}

impl Inner {
    /// The snapshot, once synced; "unavailable" (with the watch's error) otherwise.
    async fn ready(&self) -> Result<Snapshot> {
        let snapshot = self.cache.snapshot();
        if snapshot.synced() {
            return Ok(snapshot);
        }
        // A refusal will not go away by waiting; anything else may.
        let settled =
            |s: &Snapshot| s.synced() || matches!(s.error(), Some(MachineError::Forbidden(_)));
        if let Some(snapshot) = self.cache.wait_for(SYNC_WAIT, settled).await
            && snapshot.synced()
        {
            return Ok(snapshot);
        }
        let snapshot = self.cache.snapshot();
        Err(match snapshot.error() {
            Some(MachineError::Forbidden(message)) => MachineError::Forbidden(message.clone()),
            Some(error) => MachineError::Unavailable(format!(
                "cannot read the VM from the KubeVirt API: {error}"
            )),
            None => MachineError::Unavailable(
                "still reading the VM from the KubeVirt API; retry".to_owned(),
            ),
        })
    }

    fn vm(&self, snapshot: &Snapshot) -> Result<Arc<VirtualMachine>> {
        snapshot.vm.clone().ok_or_else(|| {
            MachineError::Unavailable(format!(
                "VirtualMachine {}/{} does not exist",
                self.config.namespace, self.config.vm_name
            ))
        })
    }

    fn power_state_of(&self, snapshot: &Snapshot) -> Result<PowerState> {
        let (observed, desired) = view(snapshot)?;
        let state = power::power_state(&observed, &desired);
        let mut expect = self.expect.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((target, until)) = *expect {
            if Instant::now() < until && state.settled() != target.settled() {
                return Ok(if target.settled() == PowerState::On {
                    PowerState::PoweringOn
                } else {
                    PowerState::PoweringOff
                });
            }
            *expect = None;
        }
        Ok(state)
    }

    /// Intent first (desired power, the VMI being restarted), then the calls, then the facts
    /// (which VMI has booted): a sidecar that dies anywhere in between leaves annotations
    /// from which the next one finishes the job. Success once the API accepted all of it.
    async fn execute(&self, plan: &Plan, snapshot: &Snapshot) -> Result<Outcome> {
        let mut intent = std::collections::BTreeMap::new();
        let mut facts = std::collections::BTreeMap::new();
        if let Some(on) = plan.set_power {
            intent.insert(
                annotations::POWER,
                Some(annotations::power_value(on).to_owned()),
            );
        }
        match &plan.set_restart_of {
            Some(Some(uid)) => {
                intent.insert(annotations::RESTART_OF, Some(uid.clone()));
            }
            Some(None) => {
                facts.insert(annotations::RESTART_OF, None);
            }
            None => {}
        }
        if let Some(uid) = &plan.set_booted_vmi {
            facts.insert(annotations::BOOTED_VMI, Some(uid.clone()));
        }
        if let Some(settled) = &plan.set_settled_vmi {
            facts.insert(annotations::POWER_SETTLED_VMI, settled.clone());
        }
        if let Some(wait) = &plan.set_media_wait {
            if let Some(why) = wait.as_ref().and_then(|w| w.gave_up.as_deref()) {
                tracing::warn!(why, "power-on given up");
            }
            intent.insert(
                annotations::MEDIA_BOOT_WAIT,
                wait.as_ref().map(|w| w.to_annotation()),
            );
        }
        if !intent.is_empty() {
            let vm = self.api.patch_annotations(&intent).await?;
            self.cache.offer_vm(vm);
        }
        if let Some(expect) = plan.expect {
            *self.expect.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((expect, Instant::now() + EXPECT_FOR));
        }
        let mut deferred = false;
        for call in &plan.calls {
            match self.api.call(*call).await {
                Ok(()) => {}
                // Someone (a twin sidecar, a user) got there first: what was asked holds.
                Err(MachineError::NotAllowed(message)) if already_done(*call, &message) => {
                    tracing::info!(?call, %message, "already done");
                }
                // KubeVirt refuses to unpause while a VM snapshot is taken
                // (pkg/virt-api/rest/lifecycle.go, UnpauseVMIRequestHandler). The power-on is
                // accepted and finished by the reconcile loop once the snapshot is done: this
                // VMI is recorded as not booted yet, so it is the one to boot.
                Err(MachineError::NotAllowed(message))
                    if *call == power::Call::Unpause && snapshot_in_progress(&message) =>
                {
                    tracing::warn!(
                        %message,
                        "power-on waits for the VM snapshot to complete; it will be finished then"
                    );
                    deferred = true;
                    *self.expect.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((PowerState::PoweringOn, Instant::now() + EXPECT_FOR));
                    facts.remove(annotations::BOOTED_VMI);
                    if snapshot_booted(snapshot) {
                        facts.insert(annotations::BOOTED_VMI, None);
                    }
                    break;
                }
                Err(error) => {
                    *self.expect.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return Err(error);
                }
            }
        }
        if !facts.is_empty() {
            let vm = self.api.patch_annotations(&facts).await?;
            self.cache.offer_vm(vm);
        }
        if plan.boots
            && !deferred
            && let Some(vmi) = snapshot.vmi.as_deref()
        {
            self.consume_once_override(vmi, false).await?;
        }
        Ok(if deferred {
            Outcome::Deferred
        } else {
            Outcome::Done
        })
    }

    /// A one-time override is used up by the boot it applied to: the template gets its
    /// persistent order back and the override reads Disabled. `recovering`: the boot was
    /// made by an earlier sidecar, so the VMI must be one created after the override.
    async fn consume_once_override(
        &self,
        vmi: &VirtualMachineInstance,
        recovering: bool,
    ) -> Result<()> {
        for _ in 0..8 {
            let snapshot = self.cache.snapshot();
            let vm = self.vm(&snapshot)?;
            let Some(state) = annotations::boot_state(&vm) else {
                return Ok(());
            };
            let current = annotations::boot_override(&vm);
            if current.map(|b| b.enabled) != Some(BootOverrideEnabled::Once) {
                return Ok(());
            }
            if !applies_to(&state, vmi, recovering) {
                return Ok(());
            }
            let ops = boot_ops::consume(&vm, &state);
            match self.api.json_patch(ops).await? {
                Ok(vm) => {
                    tracing::info!(
                        "one-time boot override used up; persistent boot order restored"
                    );
                    self.cache.offer_vm(vm);
                    return Ok(());
                }
                Err(()) => self.cache.offer_vm(self.api.get_vm().await?),
            }
        }
        Err(MachineError::Busy(
            "the VM kept changing while the boot override was restored; retry".into(),
        ))
    }
}

/// How far a plan got: all of it, or accepted and left for the reconcile loop to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    Deferred,
}

/// KubeVirt's refusal says the call's effect is already there.
fn already_done(call: power::Call, message: &str) -> bool {
    match call {
        power::Call::Pause => message.ends_with("VMI is already paused"),
        power::Call::Unpause => message.ends_with("VMI is not paused"),
        _ => false,
    }
}

/// virt-api's refusal to unpause during a VM snapshot (const `vmSnapshotInprogress`).
fn snapshot_in_progress(message: &str) -> bool {
    message.ends_with("VM snapshot is in progress")
}

/// The VM records the snapshot's VMI as booted (a fresh boot by reset, then unpause).
fn snapshot_booted(snapshot: &Snapshot) -> bool {
    match (snapshot.vm.as_deref(), snapshot.vmi.as_deref()) {
        (Some(vm), Some(vmi)) => {
            vmi.uid().is_some() && vm.annotation(annotations::BOOTED_VMI) == vmi.uid()
        }
        _ => false,
    }
}

/// Did `vmi` boot with the override described by `state`?
fn applies_to(state: &BootState, vmi: &VirtualMachineInstance, recovering: bool) -> bool {
    let from_template = vmi
        .vm_generation()
        .is_some_and(|g| g >= state.applied_generation);
    let created_after = state.set_on_vmi.as_deref() != vmi.uid();
    from_template && (!recovering || created_after)
}

mod boot_ops;

/// Reconciles at start and on every change of the VM or VMI.
async fn reconcile_loop(inner: Arc<Inner>) {
    let mut rx = inner.cache.subscribe();
    let mut retry = RECONCILE_RETRY;
    loop {
        let snapshot = rx.borrow_and_update().clone();
        if snapshot.synced() && snapshot.vm.is_some() {
            let result = {
                let _guard = inner.op_lock.lock().await;
                // Decide on the freshest state: the lock may have waited for a write.
                reconcile_once(&inner, &inner.cache.snapshot()).await
            };
            match result {
                Ok(()) => retry = RECONCILE_RETRY,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?retry, "reconcile failed; retrying");
                    // A change (e.g. the API coming back) retries at once.
                    let _ = tokio::time::timeout(retry, rx.changed()).await;
                    retry = (retry * 2).min(RECONCILE_RETRY_MAX);
                    continue;
                }
            }
        }
        // A power-on held for the medium must also end at its bound when nothing changes.
        let held = view(&snapshot)
            .is_ok_and(|(_, d)| d.media_wait.as_ref().is_some_and(|w| w.gave_up.is_none()));
        if held {
            if let Ok(Err(_)) = tokio::time::timeout(MEDIA_WAIT_TICK, rx.changed()).await {
                return;
            }
        } else if rx.changed().await.is_err() {
            return;
        }
    }
}

/// How often a held power-on is looked at when nothing changes (for its bound).
const MEDIA_WAIT_TICK: Duration = Duration::from_secs(30);

async fn reconcile_once(inner: &Inner, snapshot: &Snapshot) -> Result<()> {
    let (observed, desired) = view(snapshot)?;
    let plan = power::reconcile(&observed, &desired);
    if !plan.is_empty() {
        tracing::info!(?plan, "finishing what the BMC began");
        if inner.execute(&plan, snapshot).await? == Outcome::Deferred {
            // Back off and retry; the snapshot's end changes the VM and retries at once.
            return Err(MachineError::Busy(
                "the power-on waits for a VM snapshot to complete".to_owned(),
            ));
        }
    }
    // A boot made by an earlier sidecar that died before restoring the boot order.
    if let Some(vmi) = snapshot.vmi.as_deref()
        && desired.booted_vmi.as_deref() == vmi.uid()
        && !vmi.is_paused()
    {
        inner.consume_once_override(vmi, true).await?;
    }
    Ok(())
}

/// Tells subscribers what changed, from the cache.
async fn event_loop(inner: Arc<Inner>) {
    let mut rx = inner.cache.subscribe();
    let mut last_power: Option<PowerState> = None;
    let mut last_boot = None;
    let mut last_media = None;
    loop {
        let snapshot = rx.borrow_and_update().clone();
        if snapshot.synced()
            && let Some(vm) = snapshot.vm.as_deref()
        {
            if let Ok(power) = inner.power_state_of(&snapshot) {
                if let Some(from) = last_power
                    && from != power
                {
                    let _ = inner
                        .events
                        .send(MachineEvent::PowerChanged { from, to: power });
                }
                last_power = Some(power);
            }
            inner
                .announcing
                .send_if_modified(|ready| !std::mem::replace(ready, true));
            let boot = machine_impl::boot_override_of(vm);
            if last_boot.is_some_and(|b| b != boot) {
                let _ = inner.events.send(MachineEvent::BootOverrideChanged(boot));
            }
            last_boot = Some(boot);
            let media = annotations::media_state(vm);
            if last_media.as_ref().is_some_and(|m| *m != media) {
                let _ = inner.events.send(MachineEvent::MediaChanged(media.clone()));
            }
            last_media = Some(media);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl BootLayout {
    fn of_vm(vm: &VirtualMachine) -> BootLayout {
        BootLayout::of(&vm.spec.template.spec.domain)
    }
}
