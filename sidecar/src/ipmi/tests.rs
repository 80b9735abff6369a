//! The command decisions (pure) and the executor against the simulated machine.

use std::sync::Arc;
use std::time::Duration;

use kubevirt_bmc_ipmi::IpmiRequest;
use kubevirt_bmc_ipmi::message::{cc, netfn};

use super::commands::*;
use crate::machine::simulated::{SimulatedConfig, SimulatedMachine};
use crate::machine::*;

fn inventory() -> Inventory {
    Inventory {
        name: "vm1".into(),
        uuid: "5d307ca9-b3ef-428c-8861-06e72d69f223".into(),
        vcpus: 1,
        memory_mib: 1,
        interfaces: vec![],
        disks: vec![],
        secure_boot: false,
    }
}

fn snap(inventory: &Inventory) -> Snapshot<'_> {
    Snapshot {
        power: PowerState::Off,
        boot: BootOverride::default(),
        restore_policy: RestorePolicy::Previous,
        inventory,
        supported_actions: &[PowerAction::On, PowerAction::ForceOff],
        supported_targets: &[BootTarget::None, BootTarget::Pxe, BootTarget::Hdd],
        username: b"admin",
        unix_time: 1000,
    }
}

fn call(netfn: u8, cmd: u8, data: &[u8], snap: &Snapshot<'_>) -> Decision {
    decide(
        &IpmiRequest::new(netfn, cmd, 1, data),
        snap,
        &Memo::default(),
    )
}

#[test]
fn device_id_has_15_bytes_with_aux_firmware_revision() {
    let inv = inventory();
    let d = call(netfn::APP, 0x01, &[], &snap(&inv));
    assert_eq!((d.cc, d.data.len()), (cc::OK, 15));
    assert_eq!(d.data[4], 0x02, "IPMI 2.0");
}

#[test]
fn guid_goes_least_significant_byte_first() {
    let g = ipmi_guid("5d307ca9-b3ef-428c-8861-06e72d69f223");
    assert_eq!(g[0], 0x23);
    assert_eq!(g[15], 0x5d);
}

#[test]
fn restore_policy_is_set_by_chassis_06_and_read_in_chassis_status_bits_6_5() {
    let inv = inventory();
    for (byte, policy, bits) in [
        (0u8, RestorePolicy::AlwaysOff, 0b00u8),
        (1, RestorePolicy::Previous, 0b01),
        (2, RestorePolicy::AlwaysOn, 0b10),
    ] {
        let d = call(netfn::CHASSIS, 0x06, &[byte], &snap(&inv));
        assert_eq!(d.cc, cc::OK);
        assert_eq!(d.data, vec![0b111], "all three supported");
        assert_eq!(d.action, Some(Action::SetRestorePolicy(policy)));
        let s = Snapshot {
            restore_policy: policy,
            ..snap(&inv)
        };
        let status = call(netfn::CHASSIS, 0x01, &[], &s);
        assert_eq!((status.data[0] >> 5) & 0b11, bits, "{policy:?}");
    }
    // 011: which are supported, nothing changed.
    let d = call(netfn::CHASSIS, 0x06, &[3], &snap(&inv));
    assert_eq!(
        (d.cc, d.data.clone(), d.action),
        (cc::OK, vec![0b111], None)
    );
    for bad in [&[4u8][..], &[7], &[]] {
        let d = call(netfn::CHASSIS, 0x06, bad, &snap(&inv));
        assert_ne!(d.cc, cc::OK, "{bad:?}");
        assert_eq!(d.action, None);
    }
}

#[test]
fn chassis_control_asks_for_exactly_the_supported_actions() {
    let inv = inventory();
    let s = snap(&inv);
    let d = call(netfn::CHASSIS, 0x02, &[1], &s);
    assert_eq!(d.action, Some(Action::Power(PowerAction::On)));
    assert_eq!(d.memo.unwrap().restart_cause, 0x01);
    assert_eq!(
        call(netfn::CHASSIS, 0x02, &[0], &s).action,
        Some(Action::Power(PowerAction::ForceOff))
    );
    // Diagnostic interrupt: this machine cannot, so "invalid data" and no action.
    let d = call(netfn::CHASSIS, 0x02, &[4], &s);
    assert_eq!((d.cc, d.action), (cc::INVALID_DATA, None));
    assert_eq!(call(netfn::CHASSIS, 0x02, &[9], &s).cc, cc::INVALID_DATA);
    assert_eq!(
        call(netfn::CHASSIS, 0x02, &[], &s).cc,
        cc::REQUEST_LENGTH_INVALID
    );
}

#[test]
fn boot_options_validate_and_read_back() {
    let inv = inventory();
    let s = snap(&inv);
    let d = call(netfn::CHASSIS, 0x08, &[0x05, 0xE0, 0x04, 0, 0, 0], &s);
    assert_eq!(
        d.action,
        Some(Action::SetBoot(BootOverride {
            target: BootTarget::Pxe,
            enabled: BootOverrideEnabled::Continuous,
            mode: BootMode::Uefi
        }))
    );
    // CD is not among this machine's targets.
    assert_eq!(
        call(netfn::CHASSIS, 0x08, &[0x05, 0x80, 0x14, 0, 0, 0], &s).cc,
        cc::INVALID_DATA
    );
    assert_eq!(
        call(netfn::CHASSIS, 0x08, &[0x05, 0x80], &s).cc,
        cc::REQUEST_LENGTH_INVALID
    );
    assert_eq!(call(netfn::CHASSIS, 0x08, &[0x07, 0x00], &s).cc, 0x80);
    assert_eq!(call(netfn::CHASSIS, 0x09, &[0x02, 0, 0], &s).cc, 0x80);
    let memo = call(netfn::CHASSIS, 0x08, &[0x03, 0x08], &s).memo.unwrap();
    let d = decide(
        &IpmiRequest::new(netfn::CHASSIS, 0x09, 1, &[3, 0, 0]),
        &s,
        &memo,
    );
    assert_eq!(d.data, vec![0x01, 0x03, 0x08]);
}

#[test]
fn unknown_commands_are_invalid() {
    let inv = inventory();
    assert_eq!(
        call(netfn::APP, 0x99, &[], &snap(&inv)).cc,
        cc::INVALID_COMMAND
    );
    assert_eq!(call(0x30, 0x01, &[], &snap(&inv)).cc, cc::INVALID_COMMAND);
    assert_eq!(call(netfn::GROUP, 0x01, &[0xDC, 1], &snap(&inv)).cc, cc::OK);
    assert_eq!(
        call(netfn::GROUP, 0x02, &[0xDC], &snap(&inv)).cc,
        cc::INVALID_COMMAND
    );
}

#[test]
fn machine_errors_map_to_completion_codes() {
    let e = |m: MachineError| completion_code(&m);
    assert_eq!(e(MachineError::Busy("x".into())), 0xC0);
    assert_eq!(e(MachineError::NotAllowed("x".into())), 0xD5);
    assert_eq!(e(MachineError::NotSupported("x".into())), 0xCC);
    assert_eq!(e(MachineError::Invalid("x".into())), 0xCC);
    assert_eq!(e(MachineError::Unavailable("x".into())), 0xFF);
    assert_eq!(e(MachineError::Forbidden("x".into())), 0xD4);
}

#[tokio::test]
async fn hard_off_wins_over_a_power_on_under_way_and_soft_requests_wait() {
    let machine = Arc::new(
        SimulatedMachine::new(SimulatedConfig {
            transition: Duration::from_secs(30),
            ..SimulatedConfig::default()
        })
        .unwrap(),
    );
    let credentials = crate::credentials::Credentials::new("admin", "password");
    let server = super::IpmiServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        machine.clone(),
        &credentials,
        32,
        kubevirt_bmc_contract::annotations::IpmiAuth::Strict,
    )
    .await
    .unwrap();
    let ctx = &server.context;
    let on = IpmiRequest::new(netfn::CHASSIS, 0x02, 1, &[1]);
    assert_eq!(super::execute(ctx, &on).await.cc, cc::OK);
    assert_eq!(machine.power_state().await.unwrap(), PowerState::PoweringOn);
    // Reads report the state the transition settles in.
    let status = IpmiRequest::new(netfn::CHASSIS, 0x01, 3, &[]);
    assert_eq!(super::execute(ctx, &status).await.data[0] & 1, 1);
    // On again while powering on: nothing more to do.
    assert_eq!(super::execute(ctx, &on).await.cc, cc::OK);
    // A diagnostic interrupt needs a running OS: busy, nothing changed.
    let nmi = IpmiRequest::new(netfn::CHASSIS, 0x02, 4, &[4]);
    assert_eq!(super::execute(ctx, &nmi).await.cc, cc::NODE_BUSY);
    assert_eq!(machine.power_state().await.unwrap(), PowerState::PoweringOn);
    // Hard off wins at once.
    let off = IpmiRequest::new(netfn::CHASSIS, 0x02, 2, &[0]);
    assert_eq!(super::execute(ctx, &off).await.cc, cc::OK);
    assert_eq!(machine.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(super::execute(ctx, &status).await.data[0] & 1, 0);
    // Set Power Restore Policy reaches the machine and reads back.
    let always_on = IpmiRequest::new(netfn::CHASSIS, 0x06, 5, &[2]);
    assert_eq!(super::execute(ctx, &always_on).await.cc, cc::OK);
    assert_eq!(
        machine.restore_policy().await.unwrap(),
        RestorePolicy::AlwaysOn
    );
    assert_eq!(
        (super::execute(ctx, &status).await.data[0] >> 5) & 0b11,
        0b10
    );
}

#[tokio::test]
async fn the_receive_buffer_holds_a_burst_from_every_session() {
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let default = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
    super::size_receive_buffer(&socket, 1024);
    let sized = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
    // The kernel doubles what it is asked and caps the request at rmem_max.
    let expected = (1024 * super::RECEIVE_BUFFER_PER_SESSION).min(rmem_max) * 2;
    assert!(sized >= expected, "{sized} < {expected}");
    assert!(sized >= default, "never shrunk below the default");

    let small = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    super::size_receive_buffer(&small, 32);
    let unchanged = socket2::SockRef::from(&small).recv_buffer_size().unwrap();
    assert_eq!(unchanged, default, "32 sessions fit the default buffer");
}
