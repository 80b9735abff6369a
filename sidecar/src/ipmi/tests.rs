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
        architecture: None,
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

/// The simulated machine with a serial console that has printed before anyone reads it: its
/// output is ready the moment SOL attaches.
struct ChattyConsole(SimulatedMachine);

#[async_trait::async_trait]
impl Machine for ChattyConsole {
    async fn power_state(&self) -> Result<PowerState> {
        self.0.power_state().await
    }
    fn supported_actions(&self) -> &[PowerAction] {
        self.0.supported_actions()
    }
    async fn power(&self, action: PowerAction) -> Result<()> {
        self.0.power(action).await
    }
    async fn boot_override(&self) -> Result<BootOverride> {
        self.0.boot_override().await
    }
    async fn set_boot_override(&self, boot: BootOverride) -> Result<()> {
        self.0.set_boot_override(boot).await
    }
    fn supported_boot_targets(&self) -> &[BootTarget] {
        self.0.supported_boot_targets()
    }
    async fn media(&self) -> Result<MediaState> {
        self.0.media().await
    }
    async fn insert_media(&self, media: MediaInsert) -> Result<()> {
        self.0.insert_media(media).await
    }
    async fn eject_media(&self) -> Result<()> {
        self.0.eject_media().await
    }
    async fn inventory(&self) -> Result<Inventory> {
        self.0.inventory().await
    }
    async fn record(&self, record: Record) -> Result<Option<String>> {
        self.0.record(record).await
    }
    async fn store_record(&self, record: Record, value: Option<String>) -> Result<()> {
        self.0.store_record(record, value).await
    }
    fn events(&self) -> tokio::sync::broadcast::Receiver<MachineEvent> {
        self.0.events()
    }
    async fn restore_policy(&self) -> Result<RestorePolicy> {
        self.0.restore_policy().await
    }
    async fn set_restore_policy(&self, policy: RestorePolicy) -> Result<()> {
        self.0.set_restore_policy(policy).await
    }
    fn has_console(&self) -> bool {
        true
    }
    async fn console(&self) -> Result<Console> {
        let (input, typed) = tokio::sync::mpsc::channel(8);
        let (printed, output) = tokio::sync::mpsc::channel(8);
        printed
            .try_send(b"printed before anyone attached\r\n".to_vec())
            .expect("room for one line");
        // The machine side stays for as long as the BMC holds the console.
        tokio::spawn(async move {
            let _printed = printed;
            let mut typed = typed;
            while typed.recv().await.is_some() {}
        });
        Ok(Console { input, output })
    }
}

/// The next datagram; the wait is generous, as the test asserts an order, not a speed.
async fn recv(socket: &tokio::net::UdpSocket, buf: &mut [u8]) -> Vec<u8> {
    let n = tokio::time::timeout(Duration::from_secs(30), socket.recv(buf))
        .await
        .expect("an answer")
        .unwrap();
    buf[..n].to_vec()
}

/// ipmitool takes a SOL packet arriving before the Activate Payload response for that
/// response (with a stale completion code) and gives up: the BMC must answer the
/// activation before the console it attaches can print. Two workers, as a busy BMC could
/// run the attachment beside the UDP loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sol_output_never_overtakes_the_activate_payload_response() {
    use kubevirt_bmc_ipmi::client::Client;
    use kubevirt_bmc_ipmi::crypto::CipherSuite;
    use kubevirt_bmc_ipmi::v20::payload;

    let machine = ChattyConsole(SimulatedMachine::new(SimulatedConfig::default()).unwrap());
    let credentials = crate::credentials::Credentials::new("admin", "password");
    let server = super::IpmiServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(machine),
        &credentials,
        32,
        kubevirt_bmc_contract::annotations::IpmiAuth::Strict,
    )
    .await
    .unwrap();
    let bmc = server.local_addr().unwrap();
    tokio::spawn(server.run());

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(bmc).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let mut counter = 0u8;
    let mut rng = move |b: &mut [u8]| {
        for byte in b {
            counter = counter.wrapping_add(7);
            *byte = counter;
        }
    };
    let suite = CipherSuite::by_id(17).unwrap();
    let mut client = Client::new(
        b"admin",
        b"password",
        suite,
        kubevirt_bmc_ipmi::Privilege::Administrator,
        0x0A0B_0C0D,
    );
    socket.send(&client.open_session_request()).await.unwrap();
    let open = recv(&socket, &mut buf).await;
    let rakp1 = client.on_open_session_response(&open, &mut rng).unwrap();
    socket.send(&rakp1).await.unwrap();
    let rakp2 = recv(&socket, &mut buf).await;
    let rakp3 = client.on_rakp2(&rakp2).unwrap();
    socket.send(&rakp3).await.unwrap();
    let rakp4 = recv(&socket, &mut buf).await;
    client.on_rakp4(&rakp4).unwrap();

    let activate = [payload::SOL, 1, 0xC6, 0, 0, 0];
    let deactivate = [payload::SOL, 1, 0, 0, 0, 0];
    for round in 0..25 {
        socket
            .send(&client.request(netfn::APP, 0x48, &activate, [round; 16]))
            .await
            .unwrap();
        let first = recv(&socket, &mut buf).await;
        let (kind, _) = client.open(&first).unwrap();
        assert_eq!(
            kind,
            payload::IPMI,
            "round {round}: console output came before the Activate Payload response"
        );
        let response = client.response(&first).unwrap();
        assert_eq!((response.cmd, response.cc), (0x48, cc::OK), "round {round}");
        // The console's line follows the response.
        let output = recv(&socket, &mut buf).await;
        assert_eq!(
            client.open(&output).unwrap().0,
            payload::SOL,
            "round {round}"
        );

        socket
            .send(&client.request(netfn::APP, 0x49, &deactivate, [round; 16]))
            .await
            .unwrap();
        loop {
            let datagram = recv(&socket, &mut buf).await;
            if client.open(&datagram).unwrap().0 == payload::IPMI {
                let response = client.response(&datagram).unwrap();
                assert_eq!((response.cmd, response.cc), (0x49, cc::OK), "round {round}");
                break;
            }
            // Retransmitted output the test does not ACK.
        }
    }
}
