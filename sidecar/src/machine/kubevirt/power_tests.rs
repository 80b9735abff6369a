use super::*;

const UID: &str = "vmi-1";

fn vmi(phase: Phase, paused: bool) -> Observed {
    Observed {
        run_strategy_always: true,
        vm_generation: 1,
        vmi: Some(ObservedVmi {
            uid: UID.into(),
            phase,
            paused,
            terminating: false,
            vm_generation: Some(1),
        }),
        guest_ended: None,
        medium: Medium::None,
        now: 1_000,
    }
}

fn running() -> Observed {
    vmi(Phase::Running, false)
}
fn paused() -> Observed {
    vmi(Phase::Running, true)
}
fn starting() -> Observed {
    vmi(Phase::Starting, true)
}
fn terminating() -> Observed {
    let mut o = running();
    o.vmi.as_mut().unwrap().terminating = true;
    o
}
fn gone() -> Observed {
    Observed {
        vmi: None,
        ..running()
    }
}
fn pending(mut o: Observed) -> Observed {
    o.vm_generation = 2;
    o
}

fn ran(power: bool) -> Desired {
    Desired {
        power: Some(power),
        booted_vmi: Some(UID.into()),
        ..Desired::default()
    }
}
fn never_ran(power: Option<bool>) -> Desired {
    Desired {
        power,
        booted_vmi: Some("older".into()),
        restart_of: Some("older".into()),
        ..Desired::default()
    }
}

fn calls(o: &Observed, d: &Desired, a: PowerAction) -> Vec<Call> {
    decide(o, d, a).unwrap().calls
}

#[test]
fn on_unpauses_a_vmi_that_never_ran() {
    let plan = decide(&paused(), &never_ran(Some(false)), PowerAction::On).unwrap();
    assert_eq!(plan.calls, vec![Call::Unpause]);
    assert_eq!(plan.set_power, Some(true));
    assert_eq!(plan.set_booted_vmi.as_deref(), Some(UID));
    assert!(plan.boots);
    assert_eq!(plan.expect, Some(PowerState::On));
}

#[test]
fn on_after_off_is_a_fresh_boot_by_reset_then_unpause() {
    let plan = decide(&paused(), &ran(false), PowerAction::On).unwrap();
    assert_eq!(plan.calls, vec![Call::Reset, Call::Unpause]);
    assert_eq!(plan.set_booted_vmi, None, "already recorded");
    assert!(plan.boots);
}

#[test]
fn on_with_a_pending_template_change_restarts_and_leaves_the_boot_to_the_next_sidecar() {
    for desired in [ran(false), never_ran(Some(false))] {
        let plan = decide(&pending(paused()), &desired, PowerAction::On).unwrap();
        assert_eq!(plan.calls, vec![Call::Restart]);
        assert_eq!(plan.set_power, Some(true));
        assert_eq!(plan.set_restart_of, Some(Some(UID.into())));
        assert!(!plan.boots, "the boot happens in the next VMI");
        assert_eq!(plan.expect, Some(PowerState::PoweringOn));
    }
}

#[test]
fn on_when_on_costs_no_call_and_no_write() {
    assert!(
        decide(&running(), &ran(true), PowerAction::On)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn on_when_no_vmi_records_the_wish_or_starts_a_halted_vm() {
    let plan = decide(&gone(), &ran(false), PowerAction::On).unwrap();
    assert_eq!(plan.calls, vec![]);
    assert_eq!(plan.set_power, Some(true));
    let mut halted = gone();
    halted.run_strategy_always = false;
    assert_eq!(
        calls(&halted, &ran(false), PowerAction::On),
        vec![Call::Start]
    );
    assert_eq!(
        calls(&starting(), &ran(false), PowerAction::On),
        vec![],
        "the VMI's own sidecar boots it"
    );
}

#[test]
fn on_while_no_vmi_runs_names_the_one_replaced_so_its_successor_is_booted() {
    // The guest shut itself down (VMI finished, not replaced yet), then a client powers on.
    let mut finished = running();
    finished.vmi.as_mut().unwrap().phase = Phase::Finished;
    let plan = decide(&finished, &ran(false), PowerAction::On).unwrap();
    assert_eq!(plan.set_restart_of, Some(Some(UID.into())));
    let successor = Desired {
        power: Some(true),
        booted_vmi: Some(UID.into()),
        restart_of: Some(UID.into()),
        ..Desired::default()
    };
    let mut next = paused();
    next.vmi.as_mut().unwrap().uid = "vmi-2".into();
    assert_eq!(reconcile(&next, &successor).calls, vec![Call::Unpause]);
    // A VMI still starting is the successor itself: name the last booted one.
    let plan = decide(&starting(), &ran(false), PowerAction::On).unwrap();
    assert_eq!(plan.set_restart_of, Some(Some(UID.into())));
    let plan = decide(&gone(), &Desired::default(), PowerAction::On).unwrap();
    assert_eq!(plan.set_restart_of, Some(Some("none".into())));
}

#[test]
fn force_off_pauses_a_running_vmi_and_remembers_it_ran() {
    let plan = decide(&running(), &never_ran(Some(true)), PowerAction::ForceOff).unwrap();
    assert_eq!(plan.calls, vec![Call::Pause]);
    assert_eq!(plan.set_power, Some(false));
    assert_eq!(plan.set_booted_vmi.as_deref(), Some(UID));
    // Paused while the BMC wanted it on: an unpause may be in flight, so pause anyway.
    assert_eq!(
        calls(&paused(), &ran(true), PowerAction::ForceOff),
        vec![Call::Pause]
    );
    for o in [paused(), starting(), terminating(), gone()] {
        if o != paused() {
            assert_eq!(
                calls(&o, &ran(true), PowerAction::ForceOff),
                vec![],
                "{o:?}"
            );
        }
        assert_eq!(
            decide(&o, &ran(true), PowerAction::ForceOff)
                .unwrap()
                .set_power,
            Some(false)
        );
    }
    assert!(
        decide(&paused(), &ran(false), PowerAction::ForceOff)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn graceful_shutdown_restarts_with_desired_off_so_the_next_vmi_stays_paused() {
    let plan = decide(&running(), &ran(true), PowerAction::GracefulShutdown).unwrap();
    assert_eq!(plan.calls, vec![Call::Restart]);
    assert_eq!(plan.set_power, Some(false));
    assert_eq!(plan.expect, Some(PowerState::PoweringOff));
    assert_eq!(
        calls(&paused(), &ran(false), PowerAction::GracefulShutdown),
        vec![]
    );
}

#[test]
fn reset_and_cycle_when_on_reset_in_place_or_restart_when_a_change_is_pending() {
    for action in [PowerAction::ForceRestart, PowerAction::PowerCycle] {
        let plan = decide(&running(), &ran(true), action).unwrap();
        assert_eq!(plan.calls, vec![Call::Reset]);
        assert!(plan.boots);
        assert_eq!(
            calls(&pending(running()), &ran(true), action),
            vec![Call::Restart]
        );
    }
}

#[test]
fn cycle_when_off_powers_on_reset_when_off_is_refused() {
    assert_eq!(
        calls(&paused(), &ran(false), PowerAction::PowerCycle),
        vec![Call::Reset, Call::Unpause]
    );
    for action in [PowerAction::ForceRestart, PowerAction::GracefulRestart] {
        let err = decide(&paused(), &ran(false), action).unwrap_err();
        assert!(
            matches!(err, MachineError::NotAllowed(ref m) if m.contains("off")),
            "{err:?}"
        );
    }
}

#[test]
fn graceful_restart_soft_reboots_or_restarts_for_a_pending_change() {
    assert_eq!(
        calls(&running(), &ran(true), PowerAction::GracefulRestart),
        vec![Call::SoftReboot]
    );
    assert_eq!(
        calls(
            &pending(running()),
            &ran(true),
            PowerAction::GracefulRestart
        ),
        vec![Call::Restart]
    );
}

#[test]
fn hard_actions_win_over_a_boot_or_shutdown_under_way_and_nmi_is_unsupported() {
    // Powering on (a VMI starting, or one the BMC is replacing): a reset or cycle is the boot
    // under way; asked again, nothing more to do. Never a refusal.
    for o in [starting(), terminating()] {
        for action in [
            PowerAction::ForceRestart,
            PowerAction::PowerCycle,
            PowerAction::GracefulRestart,
            PowerAction::On,
        ] {
            let plan = decide(&o, &ran(true), action).unwrap();
            assert_eq!(plan.calls, vec![], "{action:?} {o:?}");
            assert_eq!(plan.expect, Some(PowerState::PoweringOn), "{action:?}");
        }
        // Off wins over the boot: the incoming VMI stays paused.
        for action in [PowerAction::ForceOff, PowerAction::GracefulShutdown] {
            let plan = decide(&o, &ran(true), action).unwrap();
            assert_eq!(plan.set_power, Some(false), "{action:?} {o:?}");
        }
    }
    // Powering on with the unpause not yet seen (the cache still shows it paused): a reset is
    // a fresh boot, as when it runs; only a machine meant to be off refuses it.
    let plan = decide(&paused(), &ran(true), PowerAction::ForceRestart).unwrap();
    assert_eq!(plan.calls, vec![Call::Reset, Call::Unpause]);
    assert!(plan.boots);
    assert_eq!(plan.expect, Some(PowerState::On));
    // Shutting down (graceful shutdown under way): a reset wins and the machine comes back.
    let plan = decide(&terminating(), &ran(false), PowerAction::ForceRestart).unwrap();
    assert_eq!(plan.set_power, Some(true));
    assert_eq!(plan.set_restart_of, Some(Some(UID.into())));
    assert_eq!(plan.expect, Some(PowerState::PoweringOn));
    // Only the soft restart of a guest that is going down waits.
    assert!(matches!(
        decide(&terminating(), &ran(false), PowerAction::GracefulRestart),
        Err(MachineError::Busy(_))
    ));
    assert!(matches!(
        decide(&running(), &ran(true), PowerAction::Nmi),
        Err(MachineError::NotSupported(_))
    ));
}

#[test]
fn power_state_reads_on_only_for_a_running_unpaused_vmi() {
    assert_eq!(power_state(&running(), &ran(false)), PowerState::On);
    assert_eq!(power_state(&paused(), &ran(true)), PowerState::Off);
    assert_eq!(power_state(&paused(), &ran(false)), PowerState::Off);
    assert_eq!(
        power_state(&paused(), &never_ran(Some(true))),
        PowerState::PoweringOn
    );
    assert_eq!(
        power_state(&terminating(), &ran(false)),
        PowerState::PoweringOff
    );
    let restarting = Desired {
        restart_of: Some(UID.into()),
        ..ran(true)
    };
    assert_eq!(
        power_state(&terminating(), &restarting),
        PowerState::PoweringOn
    );
    assert_eq!(
        power_state(&terminating(), &ran(true)),
        PowerState::PoweringOff,
        "ended by someone else: it ends off"
    );
    assert_eq!(power_state(&starting(), &ran(false)), PowerState::Off);
    assert_eq!(power_state(&gone(), &restarting), PowerState::PoweringOn);
    assert_eq!(power_state(&gone(), &ran(true)), PowerState::Off);
    assert_eq!(power_state(&gone(), &Desired::default()), PowerState::Off);
    let mut finished = running();
    finished.vmi.as_mut().unwrap().phase = Phase::Finished;
    assert_eq!(
        power_state(&finished, &ran(true)),
        PowerState::Off,
        "the guest powered off"
    );
}

#[test]
fn reconcile_boots_the_vmi_that_replaced_one_the_bmc_restarted() {
    let desired = never_ran(Some(true));
    let plan = reconcile(&paused(), &desired);
    assert_eq!(plan.calls, vec![Call::Unpause]);
    assert_eq!(plan.set_booted_vmi.as_deref(), Some(UID));
    assert_eq!(plan.set_restart_of, Some(None));
    assert!(plan.boots);
    // First VMI after opting in, desired on.
    let first = Desired {
        power: Some(true),
        ..Desired::default()
    };
    assert_eq!(reconcile(&paused(), &first).calls, vec![Call::Unpause]);
}

fn lost(power: bool, policy: RestorePolicy) -> Desired {
    // The VMI the BMC last booted ended without the BMC or the guest ending it.
    Desired {
        power: Some(power),
        booted_vmi: Some("older".into()),
        restore_policy: policy,
        ..Desired::default()
    }
}

#[test]
fn reconcile_after_a_loss_of_the_vmi_follows_the_restore_policy() {
    use RestorePolicy as R;
    for (desired, on) in [
        (lost(true, R::Previous), true),
        (lost(false, R::Previous), false),
        (lost(false, R::AlwaysOn), true),
        (lost(true, R::AlwaysOn), true),
        (lost(true, R::AlwaysOff), false),
    ] {
        let plan = reconcile(&paused(), &desired);
        if on {
            assert_eq!(plan.calls, vec![Call::Unpause], "{desired:?}");
            assert_eq!(plan.set_booted_vmi.as_deref(), Some(UID));
            assert_eq!(
                plan.set_power,
                (desired.power != Some(true)).then_some(true)
            );
            assert_eq!(power_state(&paused(), &desired), PowerState::PoweringOn);
        } else {
            assert_eq!(plan.calls, vec![], "{desired:?}");
            assert_eq!(
                plan.set_power,
                (desired.power != Some(false)).then_some(false)
            );
            assert_eq!(plan.set_settled_vmi, Some(Some(UID.into())), "decided once");
            assert_eq!(power_state(&paused(), &desired), PowerState::Off);
        }
    }
    // Decided once: a VMI left off is not decided about again (nor turned on by always-on).
    let settled = Desired {
        settled_vmi: Some(UID.into()),
        ..lost(false, R::AlwaysOn)
    };
    assert!(reconcile(&paused(), &settled).is_empty());
    // ...and when that one is lost in turn, its successor is decided by the policy again.
    let mut next = paused();
    next.vmi.as_mut().unwrap().uid = "vmi-2".into();
    assert_eq!(reconcile(&next, &settled).calls, vec![Call::Unpause]);
}

#[test]
fn an_accounted_end_follows_the_desired_power_whatever_the_policy() {
    for policy in RestorePolicy::ALL {
        // The BMC shut the last VMI down (or saw the guest do it): off stays off.
        let off = Desired {
            restart_of: Some("older".into()),
            ..lost(false, policy)
        };
        let plan = reconcile(&paused(), &off);
        assert_eq!(plan.calls, vec![], "{policy:?}");
        assert_eq!(plan.set_power, None);
        // The BMC restarted it for a fresh boot: on.
        let on = Desired {
            restart_of: Some("older".into()),
            ..lost(true, policy)
        };
        assert_eq!(
            reconcile(&paused(), &on).calls,
            vec![Call::Unpause],
            "{policy:?}"
        );
    }
    // A client that powers off while the next VMI is on its way decides its fate.
    let after_loss = lost(true, RestorePolicy::AlwaysOn);
    let plan = decide(&starting(), &after_loss, PowerAction::ForceOff).unwrap();
    assert_eq!(plan.set_restart_of, Some(Some("older".into())));
    let applied = Desired {
        power: Some(false),
        restart_of: Some("older".into()),
        ..after_loss
    };
    assert_eq!(reconcile(&paused(), &applied).calls, vec![]);
}

#[test]
fn a_guest_that_powers_itself_off_is_recorded_off_and_never_a_loss() {
    let mut ended = running();
    ended.vmi.as_mut().unwrap().phase = Phase::Finished;
    ended.guest_ended = Some(GuestEnded {
        uid: UID.into(),
        rebooted: false,
    });
    let plan = reconcile(&ended, &ran(true));
    assert_eq!(plan.set_power, Some(false));
    assert_eq!(plan.set_restart_of, Some(Some(UID.into())));
    assert!(plan.calls.is_empty());
    // Seen again (or by its successor's sidecar): nothing more.
    let recorded = Desired {
        power: Some(false),
        restart_of: Some(UID.into()),
        ..ran(false)
    };
    assert!(reconcile(&ended, &recorded).is_empty());
    // Its successor is an accounted end: off, even with always-on.
    let mut next = paused();
    next.vmi.as_mut().unwrap().uid = "vmi-2".into();
    next.guest_ended = ended.guest_ended.clone();
    let always_on = Desired {
        restore_policy: RestorePolicy::AlwaysOn,
        ..recorded.clone()
    };
    let plan = reconcile(&next, &always_on);
    assert!(plan.calls.is_empty());
    assert_eq!(plan.set_settled_vmi, Some(Some("vmi-2".into())));
    // A client that powered on before the sidecar saw the end: the client wins.
    let asked_on = Desired {
        power: Some(true),
        restart_of: Some(UID.into()),
        ..ran(true)
    };
    assert!(reconcile(&ended, &asked_on).is_empty());
    // Untouched machines stay untouched.
    assert!(reconcile(&paused(), &Desired::default()).is_empty());
    let plan = reconcile(&paused(), &never_ran(Some(false)));
    assert_eq!((plan.calls.len(), plan.set_power), (0, None), "left off");
    assert_eq!(plan.set_settled_vmi, Some(Some(UID.into())));
    assert!(
        reconcile(&paused(), &ran(true)).is_empty(),
        "paused by hand: not fought"
    );
    assert!(reconcile(&gone(), &ran(true)).is_empty());
}

#[test]
fn reconcile_remembers_a_vmi_found_running_so_the_next_on_is_a_fresh_boot() {
    let plan = reconcile(&running(), &Desired::default());
    assert_eq!(plan.set_booted_vmi.as_deref(), Some(UID));
    assert!(plan.calls.is_empty());
    // Booted by a sidecar that died before recording it: recorded, restart finished.
    let plan = reconcile(&running(), &never_ran(Some(true)));
    assert_eq!(plan.set_booted_vmi.as_deref(), Some(UID));
    assert_eq!(plan.set_restart_of, Some(None));
    assert!(reconcile(&running(), &ran(true)).is_empty());
}

#[test]
fn every_action_from_every_state_is_decided_without_panicking() {
    let states = [
        running(),
        paused(),
        starting(),
        terminating(),
        gone(),
        pending(running()),
        pending(paused()),
    ];
    let wishes = [
        ran(true),
        ran(false),
        never_ran(Some(true)),
        Desired::default(),
    ];
    for o in &states {
        for d in &wishes {
            for a in PowerAction::ALL {
                let _ = decide(o, d, a);
                let _ = power_state(o, d);
                let _ = reconcile(o, d);
            }
        }
    }
}

#[test]
fn a_guest_reboot_under_reboot_policy_terminate_keeps_the_machine_on() {
    let mut ended = running();
    ended.vmi.as_mut().unwrap().phase = Phase::Finished;
    ended.guest_ended = Some(GuestEnded {
        uid: UID.into(),
        rebooted: true,
    });
    let plan = reconcile(&ended, &ran(true));
    assert_eq!(plan.set_power, None, "still on");
    assert_eq!(plan.set_restart_of, Some(Some(UID.into())));
    // The successor is booted.
    let mut next = paused();
    next.vmi.as_mut().unwrap().uid = "vmi-2".into();
    next.guest_ended = ended.guest_ended.clone();
    let applied = Desired {
        restart_of: Some(UID.into()),
        ..ran(true)
    };
    assert_eq!(reconcile(&next, &applied).calls, vec![Call::Unpause]);
}

// Virtual media: a boot while the medium is importing waits for it.

fn with_medium(mut o: Observed, medium: Medium) -> Observed {
    o.medium = medium;
    o
}

fn waiting(desired: Desired, since: u64) -> Desired {
    Desired {
        media_wait: Some(MediaBootWait {
            vmi: UID.into(),
            since,
            gave_up: None,
        }),
        ..desired
    }
}

#[test]
fn power_on_while_the_medium_imports_reads_powering_on_and_does_not_unpause() {
    let observed = with_medium(paused(), Medium::Importing);
    let off = Desired {
        settled_vmi: Some(UID.into()),
        ..never_ran(Some(false))
    };
    let plan = decide(&observed, &off, PowerAction::On).unwrap();
    assert!(
        plan.calls.is_empty(),
        "no boot without the medium: {plan:?}"
    );
    assert_eq!(plan.set_power, Some(true));
    let wait = plan
        .set_media_wait
        .clone()
        .flatten()
        .expect("the wait is recorded");
    assert_eq!((wait.vmi.as_str(), wait.since), (UID, observed.now));
    assert_eq!(plan.expect, Some(PowerState::PoweringOn));
    // As the next read sees it (annotations written): PoweringOn, and reconcile holds.
    let held = waiting(
        Desired {
            power: Some(true),
            ..off.clone()
        },
        observed.now,
    );
    assert_eq!(power_state(&observed, &held), PowerState::PoweringOn);
    assert!(reconcile(&observed, &held).is_empty());
    // Without a medium the same request boots at once, as before.
    let plan = decide(&paused(), &never_ran(Some(false)), PowerAction::On).unwrap();
    assert_eq!(plan.calls, vec![Call::Unpause]);
}

#[test]
fn the_held_boot_happens_once_the_medium_is_attached() {
    let held = waiting(
        Desired {
            settled_vmi: Some(UID.into()),
            ..never_ran(Some(true))
        },
        1_000,
    );
    // Attached: the controller changed the template, so only a new VMI has the CD-ROM.
    let attached = with_medium(pending(paused()), Medium::Ready);
    let plan = reconcile(&attached, &held);
    assert_eq!(plan.calls, vec![Call::Restart]);
    assert_eq!(plan.set_restart_of, Some(Some(UID.into())));
    assert_eq!(plan.set_media_wait, Some(None));
    // The successor's sidecar boots it: its predecessor's end was the BMC's.
    let mut next = with_medium(paused(), Medium::Ready);
    next.vmi.as_mut().unwrap().uid = "vmi-2".into();
    let after = Desired {
        restart_of: Some(UID.into()),
        media_wait: None,
        ..held.clone()
    };
    assert_eq!(reconcile(&next, &after).calls, vec![Call::Unpause]);
    // Ejected meanwhile: nothing to wait for, boot the VMI as it is.
    let ejected = with_medium(paused(), Medium::None);
    let plan = reconcile(&ejected, &held);
    assert_eq!(plan.calls, vec![Call::Unpause]);
    assert_eq!(plan.set_booted_vmi, Some(UID.into()));
}

#[test]
fn a_held_boot_gives_up_after_the_bound_or_a_failed_import_with_the_reason() {
    let held = waiting(never_ran(Some(true)), 1_000);
    let mut late = with_medium(paused(), Medium::Importing);
    late.now = 1_000 + MEDIA_WAIT_BOUND_SECS - 1;
    assert!(reconcile(&late, &held).is_empty(), "still within the bound");
    late.now += 1;
    let plan = reconcile(&late, &held);
    assert_eq!(plan.set_power, Some(false));
    assert!(plan.calls.is_empty());
    let why = plan.set_media_wait.flatten().unwrap().gave_up.unwrap();
    assert!(why.contains("not imported within"), "{why}");

    let failed = with_medium(paused(), Medium::Failed("got 404".into()));
    let plan = reconcile(&failed, &held);
    let why = plan.set_media_wait.flatten().unwrap().gave_up.unwrap();
    assert!(why.contains("got 404"), "{why}");
    // Given up: Off, and the record stays until the next power-on.
    let gave_up = Desired {
        power: Some(false),
        settled_vmi: Some(UID.into()),
        media_wait: Some(MediaBootWait {
            vmi: UID.into(),
            since: 1_000,
            gave_up: Some(why),
        }),
        ..never_ran(Some(false))
    };
    assert_eq!(power_state(&failed, &gave_up), PowerState::Off);
    assert!(reconcile(&failed, &gave_up).is_empty());
    // A power-on while the import has failed is refused, saying why.
    let error = decide(&failed, &gave_up, PowerAction::On).unwrap_err();
    assert!(
        matches!(&error, MachineError::NotAllowed(m) if m.contains("got 404")),
        "{error:?}"
    );
}

#[test]
fn a_reset_of_a_running_machine_while_importing_stops_it_and_holds_the_boot() {
    let observed = with_medium(running(), Medium::Importing);
    for action in [PowerAction::ForceRestart, PowerAction::PowerCycle] {
        let plan = decide(&observed, &ran(true), action).unwrap();
        assert_eq!(plan.calls, vec![Call::Pause], "{action:?}");
        assert!(plan.set_media_wait.clone().flatten().is_some());
        assert_eq!(plan.expect, Some(PowerState::PoweringOn));
    }
    // A new VMI (after a restart asked for earlier) that would be booted waits too.
    let mut successor = with_medium(paused(), Medium::Importing);
    successor.vmi.as_mut().unwrap().uid = "vmi-2".into();
    let plan = reconcile(&successor, &never_ran(Some(true)));
    assert!(plan.calls.is_empty(), "{plan:?}");
    assert_eq!(
        plan.set_media_wait.flatten().map(|w| w.vmi),
        Some("vmi-2".into())
    );
    // Ironic retries the power-on: the wait keeps its start, so the bound holds.
    let held = waiting(ran(true), 10);
    let plan = decide(
        &with_medium(paused(), Medium::Importing),
        &held,
        PowerAction::On,
    )
    .unwrap();
    assert_eq!(plan.set_media_wait, None, "{plan:?}");
    assert!(plan.calls.is_empty());
}
