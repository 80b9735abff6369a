//! The power model of DESIGN.md as pure functions: what the VM and VMI look like, what the
//! BMC last wanted, and what a client asks -> the writes and KubeVirt calls to make.
//!
//! The VM is kept "plugged in" (runStrategy Always, startStrategy Paused): off is a paused
//! VMI, on is a running unpaused one. Facts the BMC must remember live in annotations on the
//! VM (see `annotations`), because the sidecar dies with every VMI.

use crate::machine::{MachineError, PowerAction, PowerState, RestorePolicy};
pub use kubevirt_bmc_contract::annotations::MediaBootWait;

/// How long a power-on waits for the virtual medium's import before giving up (the VM then
/// stays off and the wait annotation says why). Large enough for a DVD-sized installer over a
/// slow link; a bound so a stuck import (CDI retrying a dead server) ends in a clear error.
pub const MEDIA_WAIT_BOUND_SECS: u64 = 3600;

/// What the cache shows, reduced to what power decisions need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub run_strategy_always: bool,
    /// `metadata.generation` of the VM.
    pub vm_generation: i64,
    pub vmi: Option<ObservedVmi>,
    /// A VMI seen ending `Succeeded` with no deletion asked for: its guest powered itself off.
    /// virt-handler (`pkg/virt-handler/vm.go`, `calculateVmPhaseForStatusReason`) reports a
    /// domain shut off for reason Shutdown as Succeeded; a deleted VMI (`virtctl restart`,
    /// stop, eviction) carries a deletionTimestamp first, and a crash or a lost node ends Failed.
    pub guest_ended: Option<GuestEnded>,
    /// The virtual medium (the controller attaches it once CDI imported it).
    pub medium: Medium,
    /// Seconds since the Unix epoch, for the bound of a wait for the medium.
    pub now: u64,
}

/// The virtual medium, as far as booting is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Medium {
    /// None inserted (or recorded with `Inserted: false`): nothing to wait for.
    #[default]
    None,
    /// Inserted, still importing: not attached, a boot now would not see it.
    Importing,
    /// Imported and attached to the VM's template.
    Ready,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestEnded {
    pub uid: String,
    /// The VMI had `rebootPolicy: Terminate` (set while a one-time boot override is pending):
    /// KubeVirt ends it on the guest's own reboot, and that end is a reboot, not a power-off.
    pub rebooted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedVmi {
    pub uid: String,
    pub phase: Phase,
    pub paused: bool,
    /// Has a deletionTimestamp: a restart, stop or guest shutdown is under way.
    pub terminating: bool,
    /// The VM generation the VMI was created from (`kubevirt.io/vm-generation`).
    pub vm_generation: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Pending, Scheduling, Scheduled: on its way to Running.
    Starting,
    Running,
    /// Succeeded, Failed, Unknown: finished; `Always` replaces it.
    Finished,
}

impl Phase {
    pub fn parse(phase: &str) -> Phase {
        match phase {
            "Running" => Phase::Running,
            "Succeeded" | "Failed" | "Unknown" => Phase::Finished,
            _ => Phase::Starting,
        }
    }
}

/// The BMC's own memory, from the VM's annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// `None` until a client first sets power: the BMC then leaves the VMI as it is.
    pub power: Option<bool>,
    /// The VMI the BMC last booted (unpaused, or found running): it has run.
    pub booted_vmi: Option<String>,
    /// The VMI whose end the BMC accounted for (its own restart or shutdown, a guest's own
    /// power-off): its successor follows `power`. Any other end is a loss of power.
    pub restart_of: Option<String>,
    /// A VMI the BMC decided to leave off (set instead of `booted_vmi`).
    pub settled_vmi: Option<String>,
    pub restore_policy: RestorePolicy,
    /// A power-on held until the medium is attached (or given up on).
    pub media_wait: Option<MediaBootWait>,
}

/// A KubeVirt subresource call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Pause,
    Unpause,
    Reset,
    SoftReboot,
    Restart,
    Start,
}

/// Annotation writes first (desired state before acting), then the calls in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub set_power: Option<bool>,
    pub set_booted_vmi: Option<String>,
    /// `Some(None)` clears it.
    pub set_restart_of: Option<Option<String>>,
    /// `Some(None)` clears it.
    pub set_settled_vmi: Option<Option<String>>,
    /// `Some(None)` clears it.
    pub set_media_wait: Option<Option<MediaBootWait>>,
    pub calls: Vec<Call>,
    /// The calls boot the current VMI: a one-time boot override is used up by it.
    pub boots: bool,
    /// What power reads while the cache has not caught up with the calls.
    pub expect: Option<PowerState>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.set_power.is_none()
            && self.set_booted_vmi.is_none()
            && self.set_restart_of.is_none()
            && self.set_settled_vmi.is_none()
            && self.set_media_wait.is_none()
            && self.calls.is_empty()
    }
}

/// Where the machine stands, as the power model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stand {
    /// No VMI, or one that finished or is being deleted.
    Gone {
        terminating: bool,
    },
    Starting,
    Paused,
    Running,
}

fn stand(observed: &Observed) -> Stand {
    match &observed.vmi {
        None => Stand::Gone { terminating: false },
        Some(vmi) if vmi.terminating => Stand::Gone { terminating: true },
        Some(vmi) => match vmi.phase {
            Phase::Finished => Stand::Gone { terminating: false },
            Phase::Starting => Stand::Starting,
            Phase::Running if vmi.paused => Stand::Paused,
            Phase::Running => Stand::Running,
        },
    }
}

impl Observed {
    /// The template changed since the VMI was created (boot order, firmware, media): only a
    /// new VMI boots it.
    pub fn change_pending(&self) -> bool {
        self.vmi
            .as_ref()
            .and_then(|v| v.vm_generation)
            .is_some_and(|g| g < self.vm_generation)
    }
}

impl Desired {
    /// A power-on of this VMI is held until the medium is attached.
    fn waits_for_media(&self, vmi: &ObservedVmi) -> bool {
        self.media_wait
            .as_ref()
            .is_some_and(|w| w.vmi == vmi.uid && w.gave_up.is_none())
    }

    fn has_run(&self, vmi: &ObservedVmi) -> bool {
        self.booted_vmi.as_deref() == Some(vmi.uid.as_str())
    }

    /// The latest VMI the BMC decided about: booted (or found running), or left off.
    fn last(&self) -> Option<&str> {
        self.settled_vmi.as_deref().or(self.booted_vmi.as_deref())
    }

    /// The end of the latest VMI was the BMC's doing or the guest's own (or there was none
    /// before: the first VMI after opting in).
    fn accounted(&self) -> bool {
        match self.last() {
            None => true,
            Some(last) => self.restart_of.as_deref() == Some(last),
        }
    }

    /// What a VMI not yet decided about is to become: booted (`Some(true)`), left off
    /// (`Some(false)`), or left alone (no wish recorded). After an accounted end the desired
    /// power decides; after a loss (node failure, eviction, crash, `virtctl restart`) the
    /// restore policy does, as a server's BMC after an AC power loss.
    fn fate(&self, vmi: &ObservedVmi) -> Option<bool> {
        if self.has_run(vmi) || self.settled_vmi.as_deref() == Some(vmi.uid.as_str()) {
            return None;
        }
        if self.accounted() {
            return self.power;
        }
        match self.restore_policy {
            RestorePolicy::Previous => self.power,
            RestorePolicy::AlwaysOn => Some(true),
            RestorePolicy::AlwaysOff => Some(false),
        }
    }

    /// What to name as the VMI being replaced when a client sets power while there is no
    /// VMI to act on: the end of the latest one is then accounted for.
    fn replaced(&self, observed: &Observed, now: Stand) -> String {
        match (&observed.vmi, now) {
            (Some(vmi), Stand::Gone { .. }) => Some(vmi.uid.clone()),
            _ => self.last().map(str::to_owned),
        }
        .unwrap_or_else(|| "none".to_owned())
    }
}

/// Holds the boot of the paused (or to be paused) `vmi` until the medium is attached: the
/// machine reads PoweringOn meanwhile. The VMI is marked as decided about ("left off" unless
/// it ran), so no other rule boots it, and its successor after the restart that brings the
/// medium follows the desired power.
fn hold_for_media(plan: &mut Plan, observed: &Observed, desired: &Desired, vmi: &ObservedVmi) {
    if desired.power != Some(true) {
        plan.set_power = Some(true);
    }
    if !desired.has_run(vmi) && plan.set_booted_vmi.is_none() {
        plan.set_settled_vmi = Some(Some(vmi.uid.clone()));
    }
    // A repeated power-on (Ironic retries) keeps the wait's start: the bound holds.
    let since = match &desired.media_wait {
        Some(w) if desired.waits_for_media(vmi) => w.since,
        _ => observed.now,
    };
    plan.set_media_wait = Some(Some(MediaBootWait {
        vmi: vmi.uid.clone(),
        since,
        gave_up: None,
    }))
    .filter(|w| desired.media_wait.as_ref() != w.as_ref());
    plan.expect = Some(PowerState::PoweringOn);
}

/// A power-on while the import failed: refused, since the boot asked for would not find the
/// medium (an Ironic virtual-media deploy would boot the disk instead).
fn media_failed(reason: &str) -> MachineError {
    MachineError::NotAllowed(format!(
        "the virtual medium could not be imported ({reason}); eject it or insert it again \
         before powering on"
    ))
}

/// A VMI that becomes the latest decided about clears the "left off" mark.
fn finish(mut plan: Plan, desired: &Desired) -> Plan {
    if plan.set_booted_vmi.is_some() && desired.settled_vmi.is_some() {
        plan.set_settled_vmi = Some(None);
    }
    plan
}

/// Power as a client reads it. On iff the VMI runs and is not paused; transitions are shown
/// where the BMC knows where the machine is heading.
pub fn power_state(observed: &Observed, desired: &Desired) -> PowerState {
    let wants_on = desired.power == Some(true);
    match stand(observed) {
        Stand::Running => PowerState::On,
        Stand::Paused => match &observed.vmi {
            Some(vmi) if desired.waits_for_media(vmi) => PowerState::PoweringOn,
            Some(vmi) if desired.fate(vmi) == Some(true) => PowerState::PoweringOn,
            _ => PowerState::Off,
        },
        Stand::Starting if wants_on => PowerState::PoweringOn,
        Stand::Starting => PowerState::Off,
        // Ending: towards on only when the BMC ended it for a fresh boot.
        Stand::Gone { terminating } => {
            let replaced_by_bmc = match &observed.vmi {
                Some(vmi) => desired.restart_of.as_deref() == Some(vmi.uid.as_str()),
                None => desired.restart_of.is_some() && observed.run_strategy_always,
            };
            match (wants_on && replaced_by_bmc, terminating) {
                (true, _) => PowerState::PoweringOn,
                (false, true) => PowerState::PoweringOff,
                (false, false) => PowerState::Off,
            }
        }
    }
}

/// The plan for a client's power request.
pub fn decide(
    observed: &Observed,
    desired: &Desired,
    action: PowerAction,
) -> Result<Plan, MachineError> {
    use PowerAction as A;
    let now = stand(observed);
    let mut plan = Plan::default();
    let want = |plan: &mut Plan, on: bool| {
        if desired.power != Some(on) {
            plan.set_power = Some(on);
        }
    };
    let vmi = observed.vmi.as_ref();
    let mark_ran = |plan: &mut Plan| {
        if let Some(vmi) = vmi
            && !desired.has_run(vmi)
        {
            plan.set_booted_vmi = Some(vmi.uid.clone());
        }
    };
    // A fresh boot of the current VMI: reset in place, or a new VMI when the template
    // changed. The new VMI's sidecar finishes the job (`reconcile`).
    let fresh_boot = |plan: &mut Plan| {
        let vmi = vmi.expect("fresh boot needs a VMI");
        if observed.change_pending() {
            plan.set_restart_of = Some(Some(vmi.uid.clone()));
            plan.calls = vec![Call::Restart];
            plan.expect = Some(PowerState::PoweringOn);
        } else {
            plan.set_booted_vmi = (!desired.has_run(vmi)).then(|| vmi.uid.clone());
            plan.calls = if now == Stand::Paused {
                vec![Call::Reset, Call::Unpause]
            } else {
                vec![Call::Reset]
            };
            plan.boots = true;
            plan.expect = Some(PowerState::On);
        }
    };
    let off_refusal = |action: PowerAction| {
        MachineError::NotAllowed(format!("{action:?} needs the machine on; it is off"))
    };
    // No VMI to act on now: the one on its way (or the next) is decided by the sidecar that
    // comes with it, from the desired power. Naming the VMI it replaces tells that sidecar
    // this was asked for (and not the aftermath of a loss).
    let ask_next = |plan: &mut Plan, on: bool| {
        want(plan, on);
        let replaced = desired.replaced(observed, now);
        if desired.restart_of.as_ref() != Some(&replaced) {
            plan.set_restart_of = Some(Some(replaced));
        }
        if on {
            if now == (Stand::Gone { terminating: false }) && !observed.run_strategy_always {
                plan.calls = vec![Call::Start];
            }
            plan.expect = Some(PowerState::PoweringOn);
        }
    };
    let shutting_down = now == (Stand::Gone { terminating: true }) && desired.power != Some(true);

    // A boot now would not see a medium still importing: held until it is attached
    // (`reconcile` finishes it). A reset of a running machine stops it meanwhile (paused, as
    // off is), so the boot that follows is the one with the medium.
    let boots_now = match (action, now) {
        (A::On | A::PowerCycle, Stand::Paused) => true,
        (A::ForceRestart, Stand::Paused) => desired.power == Some(true),
        (A::PowerCycle | A::ForceRestart, Stand::Running) => true,
        _ => false,
    };
    if boots_now && let Some(vmi) = vmi {
        match &observed.medium {
            Medium::Importing => {
                if now == Stand::Running {
                    mark_ran(&mut plan);
                    plan.calls = vec![Call::Pause];
                }
                hold_for_media(&mut plan, observed, desired, vmi);
                return Ok(finish(plan, desired));
            }
            Medium::Failed(reason) => return Err(media_failed(reason)),
            Medium::None | Medium::Ready => {}
        }
    }

    match (action, now) {
        (A::Nmi, _) => {
            return Err(MachineError::NotSupported(
                "KubeVirt offers no way to send an NMI to a VM".to_owned(),
            ));
        }
        (A::ForceOff, Stand::Running) => {
            want(&mut plan, false);
            mark_ran(&mut plan);
            plan.calls = vec![Call::Pause];
            plan.expect = Some(PowerState::Off);
        }
        // Paused, but the BMC wanted it on: an unpause may be in flight (or done and not yet
        // seen). Pause anyway; KubeVirt's "already paused" means it holds.
        (A::ForceOff, Stand::Paused) if desired.power == Some(true) => {
            want(&mut plan, false);
            mark_ran(&mut plan);
            plan.calls = vec![Call::Pause];
            plan.expect = Some(PowerState::Off);
        }
        (A::ForceOff, Stand::Paused) => want(&mut plan, false),
        // On its way or gone: the next VMI starts paused and stays so.
        (A::ForceOff | A::GracefulShutdown, Stand::Starting | Stand::Gone { .. }) => {
            ask_next(&mut plan, false)
        }
        (A::GracefulShutdown, Stand::Running) => {
            want(&mut plan, false);
            mark_ran(&mut plan);
            if let Some(vmi) = vmi {
                plan.set_restart_of = Some(Some(vmi.uid.clone()));
            }
            plan.calls = vec![Call::Restart];
            plan.expect = Some(PowerState::PoweringOff);
        }
        (A::GracefulShutdown, Stand::Paused) => want(&mut plan, false),
        (A::On, Stand::Running) => {
            want(&mut plan, true);
            mark_ran(&mut plan);
        }
        (A::On | A::PowerCycle, Stand::Paused) => {
            want(&mut plan, true);
            let vmi = vmi.expect("paused has a VMI");
            if !desired.has_run(vmi) && !observed.change_pending() {
                plan.set_booted_vmi = Some(vmi.uid.clone());
                plan.calls = vec![Call::Unpause];
                plan.boots = true;
                plan.expect = Some(PowerState::On);
            } else {
                fresh_boot(&mut plan);
            }
        }
        // A hard reset or cycle wins over a shutdown or boot under way: the boot that comes
        // next is the restart asked for.
        (A::On | A::PowerCycle, Stand::Starting | Stand::Gone { .. }) => ask_next(&mut plan, true),
        (A::ForceRestart, Stand::Starting | Stand::Gone { .. })
            if desired.power == Some(true) || shutting_down =>
        {
            ask_next(&mut plan, true)
        }
        // Paused, but the BMC wanted it on: a power-on's unpause may be in flight (or done and
        // not yet seen). A hard reset is a fresh boot either way, never a refusal.
        (A::ForceRestart, Stand::Paused) if desired.power == Some(true) => fresh_boot(&mut plan),
        (A::PowerCycle | A::ForceRestart, Stand::Running) => {
            want(&mut plan, true);
            fresh_boot(&mut plan);
        }
        (A::GracefulRestart, Stand::Running) => {
            want(&mut plan, true);
            if observed.change_pending() {
                fresh_boot(&mut plan);
            } else {
                mark_ran(&mut plan);
                plan.calls = vec![Call::SoftReboot];
                plan.boots = true;
            }
        }
        // Powering on: the boot under way is the restart asked for.
        (A::GracefulRestart, Stand::Starting | Stand::Gone { .. })
            if desired.power == Some(true) =>
        {
            ask_next(&mut plan, true)
        }
        // The guest is shutting down; a soft restart needs it up. Only soft requests wait.
        (A::GracefulRestart, Stand::Gone { terminating: true }) => {
            return Err(MachineError::Busy(
                "the guest is shutting down; retry GracefulRestart once it is off, or use \
                 ForceRestart"
                    .to_owned(),
            ));
        }
        (A::GracefulRestart | A::ForceRestart, _) => return Err(off_refusal(action)),
    }
    Ok(finish(plan, desired))
}

/// What a sidecar does on its own, at start and whenever the VMI changes: finish a power-on
/// whose restart ended the previous sidecar, settle "off" after a guest shut itself down,
/// and remember a VMI found running.
pub fn reconcile(observed: &Observed, desired: &Desired) -> Plan {
    let mut plan = Plan::default();
    // The guest powered the latest VMI off itself: off, as a server whose OS shut down. The
    // sidecar that sees it records it before it goes (and a twin or successor that still
    // sees the finished VMI does the same).
    // Under rebootPolicy Terminate the guest's reboot ends the VMI the same way: the machine
    // stays as it was and the next VMI, from the restored template, boots the persistent
    // device.
    if let Some(ended) = &observed.guest_ended
        && desired.last() == Some(ended.uid.as_str())
        && desired.restart_of.as_deref() != Some(ended.uid.as_str())
    {
        if !ended.rebooted {
            plan.set_power = (desired.power != Some(false)).then_some(false);
        }
        plan.set_restart_of = Some(Some(ended.uid.clone()));
        return plan;
    }
    if let Some(wait) = &desired.media_wait {
        let current = observed.vmi.as_ref().filter(|v| v.uid == wait.vmi);
        match current {
            Some(vmi) if wait.gave_up.is_none() && stand(observed) == Stand::Paused => {
                return media_wait_step(observed, desired, vmi, wait);
            }
            // Given up on this VMI: the record stays, saying why, until the next power-on.
            Some(_) if wait.gave_up.is_some() => {}
            // The waiting VMI is gone or was booted by other means: nothing held any more.
            _ => plan.set_media_wait = Some(None),
        }
    }
    let Some(vmi) = observed.vmi.as_ref() else {
        return plan;
    };
    match stand(observed) {
        Stand::Paused
            if desired.fate(vmi) == Some(true) && observed.medium == Medium::Importing =>
        {
            hold_for_media(&mut plan, observed, desired, vmi);
        }
        Stand::Paused => match desired.fate(vmi) {
            Some(true) => {
                if desired.power != Some(true) {
                    plan.set_power = Some(true);
                }
                plan.set_booted_vmi = Some(vmi.uid.clone());
                if desired.restart_of.is_some() {
                    plan.set_restart_of = Some(None);
                }
                plan.calls = vec![Call::Unpause];
                plan.boots = true;
                plan.expect = Some(PowerState::On);
            }
            Some(false) => {
                if desired.power != Some(false) {
                    plan.set_power = Some(false);
                }
                plan.set_settled_vmi = Some(Some(vmi.uid.clone()));
            }
            None => {}
        },
        // Found running and not recorded: booted by a sidecar that died before it could
        // write that down (or by hand). Record it, and the restart it finished.
        Stand::Running if !desired.has_run(vmi) => {
            plan.set_booted_vmi = Some(vmi.uid.clone());
            if desired.restart_of.is_some() {
                plan.set_restart_of = Some(None);
            }
        }
        _ => {}
    }
    finish(plan, desired)
}

/// A held power-on of the paused `vmi`: still waiting, give up (import failed, or the bound
/// passed), or boot now that the medium is attached (a new VMI when the template changed, as
/// attaching it does; an unpause when it did not, e.g. the medium was ejected).
fn media_wait_step(
    observed: &Observed,
    desired: &Desired,
    vmi: &ObservedVmi,
    wait: &MediaBootWait,
) -> Plan {
    let mut plan = Plan::default();
    let give_up = |plan: &mut Plan, why: String| {
        plan.set_power = (desired.power != Some(false)).then_some(false);
        if !desired.has_run(vmi) {
            plan.set_settled_vmi = Some(Some(vmi.uid.clone()));
        }
        plan.set_media_wait = Some(Some(MediaBootWait {
            gave_up: Some(why),
            ..wait.clone()
        }));
    };
    match &observed.medium {
        Medium::Importing if observed.now < wait.since.saturating_add(MEDIA_WAIT_BOUND_SECS) => {}
        Medium::Importing => give_up(
            &mut plan,
            format!(
                "the virtual medium was not imported within {MEDIA_WAIT_BOUND_SECS} s of the \
                 power-on; the machine stays off"
            ),
        ),
        Medium::Failed(reason) => give_up(
            &mut plan,
            format!("the virtual medium could not be imported ({reason}); the machine stays off"),
        ),
        Medium::Ready | Medium::None => {
            plan.set_media_wait = Some(None);
            if observed.change_pending() {
                plan.set_restart_of = Some(Some(vmi.uid.clone()));
                plan.calls = vec![Call::Restart];
                plan.expect = Some(PowerState::PoweringOn);
            } else {
                plan.set_booted_vmi = Some(vmi.uid.clone());
                plan.set_settled_vmi = desired.settled_vmi.is_some().then_some(None);
                plan.calls = if desired.has_run(vmi) {
                    vec![Call::Reset, Call::Unpause]
                } else {
                    vec![Call::Unpause]
                };
                plan.boots = true;
                plan.expect = Some(PowerState::On);
            }
        }
    }
    plan
}

#[cfg(test)]
#[path = "power_tests.rs"]
mod tests;
