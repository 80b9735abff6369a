//! The power model of DESIGN.md as pure functions: what the VM and VMI look like, what the
//! BMC last wanted, and what a client asks -> the writes and KubeVirt calls to make.
//!
//! The VM is kept "plugged in" (runStrategy Always, startStrategy Paused): off is a paused
//! VMI, on is a running unpaused one. Facts the BMC must remember live in annotations on the
//! VM (see `annotations`), because the sidecar dies with every VMI.

use crate::machine::{MachineError, PowerAction, PowerState};

/// What the cache shows, reduced to what power decisions need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub run_strategy_always: bool,
    /// `metadata.generation` of the VM.
    pub vm_generation: i64,
    pub vmi: Option<ObservedVmi>,
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
    /// The VMI the BMC restarted for a fresh boot: its successor is to be booted.
    pub restart_of: Option<String>,
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
    fn has_run(&self, vmi: &ObservedVmi) -> bool {
        self.booted_vmi.as_deref() == Some(vmi.uid.as_str())
    }

    /// A paused VMI that never ran is to be booted when the BMC wants power on and either
    /// it never booted one before (first VMI after opting in) or it ended the last one
    /// itself. A VMI that ended otherwise (the guest powered off) leaves the machine off.
    fn boots_fresh(&self, vmi: &ObservedVmi) -> bool {
        self.power == Some(true)
            && !self.has_run(vmi)
            && (self.booted_vmi.is_none()
                || self.restart_of.as_deref().is_some_and(|r| r != vmi.uid))
    }
}

/// Power as a client reads it. On iff the VMI runs and is not paused; transitions are shown
/// where the BMC knows where the machine is heading.
pub fn power_state(observed: &Observed, desired: &Desired) -> PowerState {
    let wants_on = desired.power == Some(true);
    match stand(observed) {
        Stand::Running => PowerState::On,
        Stand::Paused => match &observed.vmi {
            Some(vmi) if desired.boots_fresh(vmi) => PowerState::PoweringOn,
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
    let busy =
        |state: PowerState| MachineError::Busy(format!("power is {state}, retry when it settles"));
    let off_refusal = |action: PowerAction| {
        MachineError::NotAllowed(format!("{action:?} needs the machine on; it is off"))
    };

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
        // Off, or on its way: remembering "off" is enough, the next VMI starts paused.
        (A::ForceOff, _) => want(&mut plan, false),
        (A::GracefulShutdown, Stand::Running) => {
            want(&mut plan, false);
            mark_ran(&mut plan);
            plan.set_restart_of = desired.restart_of.as_ref().map(|_| None);
            plan.calls = vec![Call::Restart];
            plan.expect = Some(PowerState::PoweringOff);
        }
        (A::GracefulShutdown, Stand::Gone { terminating: true }) if desired.power == Some(true) => {
            return Err(busy(PowerState::PoweringOn));
        }
        (A::GracefulShutdown, _) => want(&mut plan, false),
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
        // No VMI to boot now: the one on its way is booted by the sidecar that comes with
        // it. Naming the VMI it replaces tells that sidecar this boot was asked for (and not
        // the aftermath of a guest that powered itself off).
        (A::On | A::PowerCycle, Stand::Starting | Stand::Gone { .. }) => {
            want(&mut plan, true);
            let replaced = match (&observed.vmi, now) {
                (Some(vmi), Stand::Gone { .. }) => Some(vmi.uid.clone()),
                _ => desired.booted_vmi.clone(),
            }
            .unwrap_or_else(|| "none".to_owned());
            if desired.restart_of.as_ref() != Some(&replaced) {
                plan.set_restart_of = Some(Some(replaced));
            }
            if now == (Stand::Gone { terminating: false }) && !observed.run_strategy_always {
                plan.calls = vec![Call::Start];
            }
            plan.expect = Some(PowerState::PoweringOn);
        }
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
        (
            A::GracefulRestart | A::ForceRestart,
            Stand::Starting | Stand::Gone { terminating: true },
        ) if desired.power == Some(true) => {
            return Err(busy(PowerState::PoweringOn));
        }
        (A::GracefulRestart | A::ForceRestart, _) => return Err(off_refusal(action)),
    }
    Ok(plan)
}

/// What a sidecar does on its own, at start and whenever the VMI changes: finish a power-on
/// whose restart ended the previous sidecar, settle "off" after a guest shut itself down,
/// and remember a VMI found running.
pub fn reconcile(observed: &Observed, desired: &Desired) -> Plan {
    let mut plan = Plan::default();
    let Some(vmi) = observed.vmi.as_ref() else {
        return plan;
    };
    match stand(observed) {
        Stand::Paused if desired.boots_fresh(vmi) => {
            plan.set_booted_vmi = Some(vmi.uid.clone());
            if desired.restart_of.is_some() {
                plan.set_restart_of = Some(None);
            }
            plan.calls = vec![Call::Unpause];
            plan.boots = true;
            plan.expect = Some(PowerState::On);
        }
        // The VMI the BMC booted is gone and nobody asked the BMC for it: the guest powered
        // itself off (or a user restarted it). The machine is off, as a server would be.
        Stand::Paused if desired.power == Some(true) && !desired.has_run(vmi) => {
            plan.set_power = Some(false);
        }
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
    plan
}

#[cfg(test)]
#[path = "power_tests.rs"]
mod tests;
