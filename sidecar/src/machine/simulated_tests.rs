use std::time::Duration;

use super::*;
use crate::machine::BootMode;

fn instant() -> SimulatedMachine {
    SimulatedMachine::new(SimulatedConfig {
        transition: Duration::ZERO,
        ..Default::default()
    })
    .unwrap()
}

fn slow() -> SimulatedMachine {
    SimulatedMachine::new(SimulatedConfig {
        transition: Duration::from_millis(200),
        ..Default::default()
    })
    .unwrap()
}

async fn machine_in(state: PowerState) -> SimulatedMachine {
    let machine = if state.is_transition() {
        slow()
    } else {
        instant()
    };
    match state {
        PowerState::Off => {}
        PowerState::On => machine.power(PowerAction::On).await.unwrap(),
        PowerState::PoweringOn => machine.power(PowerAction::On).await.unwrap(),
        PowerState::PoweringOff => {
            machine.power(PowerAction::On).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            machine.power(PowerAction::GracefulShutdown).await.unwrap();
        }
    }
    assert_eq!(machine.power_state().await.unwrap(), state);
    machine
}

/// Every action from every state: the outcome, and where power ends up once settled.
#[tokio::test]
async fn every_power_action_from_every_state() {
    use PowerAction as A;
    use PowerState as P;
    enum Outcome {
        Settles(PowerState),
        NotAllowed,
    }
    use Outcome::*;
    let table = [
        (P::Off, A::On, Settles(P::On)),
        (P::Off, A::ForceOff, Settles(P::Off)),
        (P::Off, A::GracefulShutdown, Settles(P::Off)),
        (P::Off, A::GracefulRestart, NotAllowed),
        (P::Off, A::ForceRestart, NotAllowed),
        (P::Off, A::PowerCycle, Settles(P::On)),
        // Accepted as a physical BMC does; nothing happens (see nmi_to_a_machine_that_is_off).
        (P::Off, A::Nmi, Settles(P::Off)),
        (P::On, A::On, Settles(P::On)),
        (P::On, A::ForceOff, Settles(P::Off)),
        (P::On, A::GracefulShutdown, Settles(P::Off)),
        (P::On, A::GracefulRestart, Settles(P::On)),
        (P::On, A::ForceRestart, Settles(P::On)),
        (P::On, A::PowerCycle, Settles(P::On)),
        (P::On, A::Nmi, Settles(P::On)),
    ];
    for (from, action, outcome) in table {
        let machine = machine_in(from).await;
        let result = machine.power(action).await;
        match outcome {
            Settles(to) => {
                assert_eq!(result, Ok(()), "{action:?} from {from:?}");
                assert_eq!(
                    machine.power_state().await.unwrap(),
                    to,
                    "{action:?} from {from:?}"
                );
            }
            NotAllowed => {
                assert!(
                    matches!(result, Err(MachineError::NotAllowed(_))),
                    "{action:?} from {from:?}: {result:?}"
                );
                assert_eq!(machine.power_state().await.unwrap(), from, "state changed");
            }
        }
    }
}

/// Hard actions win over a transition; asking for where the machine is heading succeeds at
/// once; only soft requests that need a running OS wait (Busy). `at_once`: the state right
/// after the call, before the transition would have settled.
#[tokio::test]
async fn hard_actions_win_over_transitions_and_soft_ones_wait() {
    use PowerAction as A;
    use PowerState as P;
    let table = [
        (P::PoweringOn, A::On, Some(P::PoweringOn), P::On),
        (P::PoweringOn, A::ForceOff, Some(P::Off), P::Off),
        (P::PoweringOn, A::GracefulShutdown, Some(P::Off), P::Off),
        (
            P::PoweringOn,
            A::GracefulRestart,
            Some(P::PoweringOn),
            P::On,
        ),
        (P::PoweringOn, A::ForceRestart, Some(P::PoweringOn), P::On),
        (P::PoweringOn, A::PowerCycle, Some(P::PoweringOn), P::On),
        (P::PoweringOn, A::Nmi, None, P::On),
        (P::PoweringOff, A::On, Some(P::PoweringOn), P::On),
        (P::PoweringOff, A::ForceOff, Some(P::Off), P::Off),
        (
            P::PoweringOff,
            A::GracefulShutdown,
            Some(P::PoweringOff),
            P::Off,
        ),
        (P::PoweringOff, A::GracefulRestart, None, P::Off),
        (P::PoweringOff, A::ForceRestart, Some(P::PoweringOn), P::On),
        (P::PoweringOff, A::PowerCycle, Some(P::PoweringOn), P::On),
        (P::PoweringOff, A::Nmi, None, P::Off),
    ];
    for (from, action, at_once, settles) in table {
        let machine = machine_in(from).await;
        let result = machine.power(action).await;
        match at_once {
            Some(state) => {
                assert_eq!(result, Ok(()), "{action:?} from {from:?}");
                assert_eq!(
                    machine.power_state().await.unwrap(),
                    state,
                    "{action:?} from {from:?}"
                );
            }
            None => assert!(
                matches!(result, Err(MachineError::Busy(_))),
                "{action:?} from {from:?}: {result:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(
            machine.power_state().await.unwrap(),
            settles,
            "{action:?} from {from:?} settles"
        );
    }
}

/// `ipmitool power on` then `power off` 270 ms later: the off wins over the boot under way
/// and the abandoned boot never completes.
#[tokio::test]
async fn force_off_during_power_on_abandons_the_boot() {
    let machine = slow();
    machine.power(PowerAction::On).await.unwrap();
    machine.power(PowerAction::ForceOff).await.unwrap();
    assert_eq!(machine.power_state().await.unwrap(), PowerState::Off);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(machine.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(
        machine.last_boot(),
        None,
        "the abandoned boot did not happen"
    );
}

#[tokio::test]
async fn nmi_to_a_machine_that_is_off_is_accepted_and_changes_nothing() {
    let machine = machine_in(PowerState::Off).await;
    let mut events = machine.events();
    assert_eq!(machine.power(PowerAction::Nmi).await, Ok(()));
    assert_eq!(machine.nmi_count(), 0, "no CPU to interrupt");
    assert_eq!(machine.power_state().await.unwrap(), PowerState::Off);
    assert!(events.try_recv().is_err(), "no state change announced");
    machine.power(PowerAction::On).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    machine.power(PowerAction::Nmi).await.unwrap();
    assert_eq!(machine.nmi_count(), 1);
}

#[tokio::test]
async fn transitions_take_the_configured_time_and_announce_themselves() {
    let machine = slow();
    let mut events = machine.events();
    machine.power(PowerAction::On).await.unwrap();
    assert_eq!(machine.power_state().await.unwrap(), PowerState::PoweringOn);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(machine.power_state().await.unwrap(), PowerState::PoweringOn);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(machine.power_state().await.unwrap(), PowerState::On);
    assert_eq!(
        events.recv().await.unwrap(),
        MachineEvent::PowerChanged {
            from: PowerState::Off,
            to: PowerState::PoweringOn
        }
    );
    assert_eq!(
        events.recv().await.unwrap(),
        MachineEvent::PowerChanged {
            from: PowerState::PoweringOn,
            to: PowerState::On
        }
    );
}

#[tokio::test]
async fn hard_off_is_instant_even_with_slow_transitions() {
    let machine = slow();
    machine.power(PowerAction::On).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    machine.power(PowerAction::ForceOff).await.unwrap();
    assert_eq!(machine.power_state().await.unwrap(), PowerState::Off);
}

#[tokio::test]
async fn once_override_is_consumed_by_the_next_boot() {
    let machine = instant();
    let pxe_once = BootOverride {
        target: BootTarget::Pxe,
        enabled: BootOverrideEnabled::Once,
        mode: BootMode::Uefi,
    };
    machine.set_boot_override(pxe_once).await.unwrap();
    assert_eq!(
        machine.boot_override().await.unwrap(),
        pxe_once,
        "read back exactly"
    );
    machine.power(PowerAction::On).await.unwrap();
    assert_eq!(machine.last_boot(), Some(BootTarget::Pxe));
    let after = machine.boot_override().await.unwrap();
    assert_eq!(after.enabled, BootOverrideEnabled::Disabled);
    assert_eq!(
        after.mode,
        BootMode::Uefi,
        "mode is not part of what a boot consumes"
    );
    machine.power(PowerAction::ForceRestart).await.unwrap();
    assert_eq!(
        machine.last_boot(),
        Some(BootTarget::Hdd),
        "second boot uses the default"
    );
}

#[tokio::test]
async fn continuous_override_applies_to_every_boot() {
    let machine = instant();
    let cd_always = BootOverride {
        target: BootTarget::Cd,
        enabled: BootOverrideEnabled::Continuous,
        mode: BootMode::Legacy,
    };
    machine.set_boot_override(cd_always).await.unwrap();
    for action in [
        PowerAction::On,
        PowerAction::ForceRestart,
        PowerAction::PowerCycle,
    ] {
        machine.power(action).await.unwrap();
        assert_eq!(
            machine.last_boot(),
            Some(BootTarget::Cd),
            "after {action:?}"
        );
        assert_eq!(machine.boot_override().await.unwrap(), cd_always);
    }
}

#[tokio::test]
async fn once_override_is_consumed_when_a_slow_boot_settles() {
    let machine = slow();
    let once = BootOverride {
        target: BootTarget::Pxe,
        enabled: BootOverrideEnabled::Once,
        mode: BootMode::Uefi,
    };
    machine.set_boot_override(once).await.unwrap();
    machine.power(PowerAction::On).await.unwrap();
    assert_eq!(
        machine.boot_override().await.unwrap(),
        once,
        "not consumed before the boot"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        machine.boot_override().await.unwrap().enabled,
        BootOverrideEnabled::Disabled
    );
    assert_eq!(machine.last_boot(), Some(BootTarget::Pxe));
}

#[tokio::test]
async fn media_insert_shows_up_and_eject_clears_it() {
    let machine = instant();
    let mut events = machine.events();
    let insert = MediaInsert {
        image: "http://192.0.2.1/boot.iso".to_owned(),
        inserted: true,
        write_protected: true,
        size_bytes: None,
    };
    machine.insert_media(insert.clone()).await.unwrap();
    let media = machine.media().await.unwrap();
    assert_eq!(media.image.as_deref(), Some("http://192.0.2.1/boot.iso"));
    assert!(media.inserted);
    assert_eq!(media.status, MediaStatus::Ready);
    assert!(matches!(events.recv().await.unwrap(), MachineEvent::MediaChanged(m) if m == media));

    let second = machine.insert_media(insert).await;
    assert!(
        matches!(second, Err(MachineError::NotAllowed(_))),
        "{second:?}"
    );

    machine.eject_media().await.unwrap();
    assert_eq!(machine.media().await.unwrap(), MediaState::ejected());
}

#[tokio::test]
async fn invalid_media_url_is_refused_and_changes_nothing() {
    let machine = instant();
    let result = machine
        .insert_media(MediaInsert {
            image: "file:///etc/passwd".to_owned(),
            inserted: true,
            write_protected: true,
            size_bytes: None,
        })
        .await;
    assert!(
        matches!(result, Err(MachineError::Invalid(_))),
        "{result:?}"
    );
    assert_eq!(machine.media().await.unwrap(), MediaState::ejected());
}

#[tokio::test]
async fn state_file_round_trip_restores_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let config = SimulatedConfig {
        transition: Duration::ZERO,
        state_file: Some(path.clone()),
        ..Default::default()
    };
    let first = SimulatedMachine::new(config.clone()).unwrap();
    first.power(PowerAction::On).await.unwrap();
    let boot = BootOverride {
        target: BootTarget::Pxe,
        enabled: BootOverrideEnabled::Continuous,
        mode: BootMode::Legacy,
    };
    first.set_boot_override(boot).await.unwrap();
    first
        .insert_media(MediaInsert {
            image: "https://x.example/a.iso".to_owned(),
            inserted: true,
            write_protected: false,
            size_bytes: None,
        })
        .await
        .unwrap();
    first
        .store_record(Record::SessionKey, Some("k3y".to_owned()))
        .await
        .unwrap();
    let inventory = first.inventory().await.unwrap();
    let media = first.media().await.unwrap();
    drop(first);

    let second = SimulatedMachine::new(config).unwrap();
    assert_eq!(second.power_state().await.unwrap(), PowerState::On);
    assert_eq!(second.boot_override().await.unwrap(), boot);
    assert_eq!(second.media().await.unwrap(), media);
    assert_eq!(
        second.inventory().await.unwrap(),
        inventory,
        "same UUID and MAC"
    );
    assert_eq!(
        second.record(Record::SessionKey).await.unwrap().as_deref(),
        Some("k3y")
    );
    assert_eq!(
        second.record(Record::EventSubscriptions).await.unwrap(),
        None
    );
}

/// A restart of the simulator is its power loss: `previous` comes back as it was, `always-on`
/// boots, `always-off` stays off; the policy itself reads back exactly.
#[tokio::test]
async fn restore_policy_decides_what_a_restarted_simulator_comes_back_as() {
    for (policy, before, after) in [
        (RestorePolicy::Previous, PowerState::On, PowerState::On),
        (RestorePolicy::Previous, PowerState::Off, PowerState::Off),
        (RestorePolicy::AlwaysOn, PowerState::Off, PowerState::On),
        (RestorePolicy::AlwaysOff, PowerState::On, PowerState::Off),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = SimulatedConfig {
            transition: Duration::ZERO,
            state_file: Some(dir.path().join("state.json")),
            ..Default::default()
        };
        let first = SimulatedMachine::new(config.clone()).unwrap();
        assert_eq!(
            first.restore_policy().await.unwrap(),
            RestorePolicy::Previous
        );
        first.set_restore_policy(policy).await.unwrap();
        if before == PowerState::On {
            first.power(PowerAction::On).await.unwrap();
        }
        drop(first);
        let second = SimulatedMachine::new(config).unwrap();
        assert_eq!(second.restore_policy().await.unwrap(), policy);
        assert_eq!(
            second.power_state().await.unwrap(),
            after,
            "{policy:?} from {before:?}"
        );
    }
}

#[tokio::test]
async fn restart_mid_boot_finishes_the_boot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let config = SimulatedConfig {
        transition: Duration::from_secs(60),
        state_file: Some(path.clone()),
        ..Default::default()
    };
    let first = SimulatedMachine::new(config.clone()).unwrap();
    let once = BootOverride {
        target: BootTarget::Cd,
        enabled: BootOverrideEnabled::Once,
        mode: BootMode::Uefi,
    };
    first.set_boot_override(once).await.unwrap();
    first.power(PowerAction::On).await.unwrap();
    assert_eq!(first.power_state().await.unwrap(), PowerState::PoweringOn);
    drop(first);

    let second = SimulatedMachine::new(config).unwrap();
    assert_eq!(second.power_state().await.unwrap(), PowerState::On);
    assert_eq!(second.last_boot(), Some(BootTarget::Cd));
    assert_eq!(
        second.boot_override().await.unwrap().enabled,
        BootOverrideEnabled::Disabled
    );
}

#[test]
fn corrupt_state_file_is_a_clear_error_and_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let garbage = b"{\"version\": 1, \"power\": \"Sideways\"";
    std::fs::write(&path, garbage).unwrap();
    let config = SimulatedConfig {
        state_file: Some(path.clone()),
        ..Default::default()
    };
    let error = SimulatedMachine::new(config)
        .err()
        .expect("corrupt file refused");
    assert!(matches!(error, SimulatedError::Corrupt { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("state.json") && message.contains("left untouched"),
        "{message}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "file untouched");
}

#[test]
fn state_file_of_another_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let config = SimulatedConfig {
        state_file: Some(path.clone()),
        ..Default::default()
    };
    drop(SimulatedMachine::new(config.clone()).unwrap());
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"version\": 1", "\"version\": 99");
    std::fs::write(&path, &text).unwrap();
    let error = SimulatedMachine::new(config)
        .err()
        .expect("other version refused");
    assert!(error.to_string().contains("version 99"), "{error}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn mac_is_stable_and_well_formed() {
    let mac = mac_from_uuid("123e4567-e89b-12d3-a456-426614174000");
    assert_eq!(mac, "52:54:00:17:40:00");
}

async fn next_output(console: &mut Console) -> String {
    let bytes = tokio::time::timeout(Duration::from_secs(2), console.output.recv())
        .await
        .expect("console output in time")
        .expect("console open");
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn the_console_prints_a_banner_on_every_boot_and_echoes_typing() {
    for machine in [instant(), slow()] {
        let mut console = machine.console().await.unwrap();
        machine.power(PowerAction::On).await.unwrap();
        let banner = next_output(&mut console).await;
        assert!(banner.contains("booting from Hdd"), "{banner:?}");
        assert!(banner.ends_with("sim-vm login: "), "{banner:?}");
        console
            .input
            .send(ConsoleInput::Bytes(b"root\r".to_vec()))
            .await
            .unwrap();
        assert_eq!(next_output(&mut console).await, "root\r\n");
        console.input.send(ConsoleInput::Break).await.unwrap();
        assert_eq!(next_output(&mut console).await, "\r\n[break]\r\n");
        tokio::time::sleep(Duration::from_millis(250)).await;
        machine.power(PowerAction::ForceRestart).await.unwrap();
        assert!(next_output(&mut console).await.contains("booting from"));
    }
}
