//! go-ipmi (github.com/bougou/go-ipmi), the pure-Go IPMI library bmclib's IPMI provider
//! uses, as it opens a lanplus session with cipher suite 3 and serves every call of bmclib's
//! `goipmi` provider (bmc-toolbox/bmclib `providers/goipmi/goipmi.go`: `Open`, `Close`,
//! `PowerStateGet`, `PowerSet`, `BootDeviceSet`, `UserRead`; it has no compatibility probe of
//! its own). No go-ipmi binary runs here: each datagram is built from the field values
//! go-ipmi's source puts in it (pkg/client/*.go, pkg/cmd/*/*.go and the root package's
//! cmd_*.go, named per step), and sent to `kubevirt-bmc simulate`.
//!
//! Where go-ipmi differs from ipmitool (ipmi_ipmitool.rs covers that one):
//! * Get Channel Authentication Capabilities goes out in IPMI 1.5 framing (auth type none,
//!   session 0) even for lanplus, channel 0Eh with the IPMI v2.0 extended bit, privilege
//!   Administrator (connect20 in interface_lan.go);
//! * with the suite given (bmclib passes 3) there is no Get Channel Cipher Suites loop
//!   (connect20 uses `findBestCipherSuites` only when no suite is set);
//! * Open Session asks for maximum privilege 0 ("highest matching the algorithms") and
//!   uses the console session ID A0A1A2A3h (OpenSession in session_setup.go);
//! * RAKP 1 asks for Administrator with the name-only lookup bit: role 14h
//!   (RAKPMessage1); RAKP 3 echoes RAKP 2's status (RAKPMessage3);
//! * the first message after RAKP 4 is Set Session Privilege Level (Administrator),
//!   authenticated and encrypted, session sequence 1 (genSession20 in session_v20.go:
//!   integrity pad FFh to a multiple of 4, AES pad 1..n, as our client encodes them);
//! * once connected, a keepalive sends Get Session Info for the current session
//!   (connectLAN → startSessionKeepalive → keepSessionAlive, interface_lan.go);
//! * Close Session names the BMC's session ID (closeLAN).

mod ipmi_common;

use std::net::UdpSocket;
use std::time::Duration;

use ipmi_common::{Bmc, PASSWORD, assert_contains};
use kubevirt_bmc_ipmi::client::Client;
use kubevirt_bmc_ipmi::crypto::CipherSuite;
use kubevirt_bmc_ipmi::message::{IpmiRequest, IpmiResponse, cc, netfn};
use kubevirt_bmc_ipmi::rakp::{OpenSessionRequest, OpenSessionResponse, status};
use kubevirt_bmc_ipmi::{Privilege, rmcp, v15, v20};

/// go-ipmi's fixed remote console session ID ("for easy recognition in the packet dump").
const GO_IPMI_CONSOLE_ID: u32 = 0xA0A1_A2A3;

/// bmclib's `New` sets cipher suite 3 unless told otherwise; ipmitool checks on a session of
/// its own with the same suite.
const IPMITOOL: &str = "-I lanplus -C 3";

struct Udp(UdpSocket);

impl Udp {
    fn new(bmc: &Bmc) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(("127.0.0.1", bmc.port)).unwrap();
        // Generous: a busy machine must not turn a late answer into a failure.
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Udp(socket)
    }

    fn exchange(&self, datagram: &[u8]) -> Vec<u8> {
        self.0.send(datagram).unwrap();
        let mut buf = [0u8; 1024];
        let n = self.0.recv(&mut buf).expect("the BMC answers");
        buf[..n].to_vec()
    }
}

fn rng() -> impl FnMut(&mut [u8]) {
    let mut n = 3u8;
    move |b: &mut [u8]| {
        for x in b {
            n = n.wrapping_mul(29).wrapping_add(11);
            *x = n;
        }
    }
}

fn plain_payload(datagram: &[u8], payload_type: u8) -> Vec<u8> {
    let rmcp::Rmcp::Ipmi(body) = rmcp::decode(datagram).unwrap() else {
        panic!("not an IPMI datagram");
    };
    let packet = v20::decode(body).unwrap();
    assert_eq!(packet.header.payload_type, payload_type);
    packet.plain_payload().unwrap().to_vec()
}

/// A session as go-ipmi's `Connect` leaves it, which is all bmclib's `Open` does.
struct GoIpmi {
    udp: Udp,
    client: Client,
    bmc_id: u32,
}

impl GoIpmi {
    fn connect(bmc: &Bmc) -> Self {
        let udp = Udp::new(bmc);
        let mut rng = rng();

        // 1. Get Channel Authentication Capabilities, IPMI 1.5 framing, session 0
        // (connect20, interface_lan.go; request Pack sets bit 7 for IPMIv20Extended).
        let request = IpmiRequest::new(netfn::APP, 0x38, 1, &[0x80 | 0x0E, 0x04]).encode();
        let rsp = udp.exchange(&v15::encode(0, 0, 0, &[0; 16], &request));
        let rmcp::Rmcp::Ipmi(body) = rmcp::decode(&rsp).unwrap() else {
            panic!("not an IPMI datagram");
        };
        let caps = IpmiResponse::decode(v15::decode(body).unwrap().message).unwrap();
        assert_eq!(caps.cc, cc::OK);
        // go-ipmi's Unpack wants at least 8 bytes; byte 1 bit 7: v2.0 extended data present;
        // byte 3 bit 1: the channel supports IPMI v2.0 (ConnectAuto reads it).
        assert!(caps.data.len() >= 8, "{:?}", caps.data);
        assert_eq!(caps.data[1] & 0x80, 0x80, "{:?}", caps.data);
        assert_eq!(caps.data[3] & 0x02, 0x02, "{:?}", caps.data);

        // 2. Open Session Request, maximum privilege 0, console ID A0A1A2A3h, suite 3
        // (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128) (OpenSession, session_setup.go).
        let suite = CipherSuite::by_id(3).unwrap();
        let open = OpenSessionRequest {
            tag: 0,
            max_privilege: 0,
            console_session_id: GO_IPMI_CONSOLE_ID,
            auth: suite.auth as u8,
            integrity: suite.integrity as u8,
            confidentiality: suite.confidentiality as u8,
        };
        let open_datagram = v20::encode(
            v20::payload::OPEN_SESSION_REQUEST,
            0,
            0,
            &open.encode(),
            None,
            [0; 16],
        );
        let rsp = udp.exchange(&open_datagram);
        let payload = plain_payload(&rsp, v20::payload::OPEN_SESSION_RESPONSE);
        // go-ipmi's Unpack needs all 36 bytes on success.
        assert_eq!(payload.len(), 36);
        let response = OpenSessionResponse::decode(&payload).unwrap();
        assert_eq!(response.status, status::OK);
        let (bmc_id, chosen) = response.accepted.expect("session offered");
        assert_eq!(chosen, suite, "the BMC keeps suite 3");
        assert_ne!(bmc_id, 0);

        // 3. RAKP 1: Administrator | name-only lookup (14h), username "admin"
        // (RAKPMessage1); our client builds exactly that from Privilege::Administrator.
        // RAKP 2 is checked as ValidateRAKP2 does: status 0, console ID, auth code.
        let mut client = Client::new(
            b"admin",
            PASSWORD.as_bytes(),
            suite,
            Privilege::Administrator,
            GO_IPMI_CONSOLE_ID,
        );
        let rakp1 = client.on_open_session_response(&rsp, &mut rng).unwrap();
        let rakp1_payload = plain_payload(&rakp1, v20::payload::RAKP1);
        assert_eq!(rakp1_payload[24], 0x14, "go-ipmi's role byte");
        // 4. RAKP 3 with RAKP 2's status, then RAKP 4 verified as ValidateRAKP4 does.
        let rakp3 = client.on_rakp2(&udp.exchange(&rakp1)).unwrap();
        client.on_rakp4(&udp.exchange(&rakp3)).unwrap();
        assert!(client.is_active());
        assert_eq!(client.bmc_session_id(), Some(bmc_id));

        let mut session = GoIpmi {
            udp,
            client,
            bmc_id,
        };
        // 5. Set Session Privilege Level to Administrator (connect20), the session's first
        // authenticated, encrypted message: sequence 1.
        let rsp = session.call(netfn::APP, 0x3B, &[0x04]);
        assert_eq!((rsp.cc, rsp.data), (cc::OK, vec![0x04]));
        session
    }

    /// One request in the session (go-ipmi's Exchange); the answer names the same command.
    fn call(&mut self, net_fn: u8, cmd: u8, data: &[u8]) -> IpmiResponse {
        let datagram = self.client.request(net_fn, cmd, data, [7; 16]);
        let rsp = self.client.response(&self.udp.exchange(&datagram)).unwrap();
        assert_eq!((rsp.netfn, rsp.cmd), (net_fn + 1, cmd));
        rsp
    }

    /// Power as bmclib's `PowerStateGet` reads it: Get Chassis Status (GetChassisStatus,
    /// api_chassis.go), `PowerIsOn` = bit 0 of byte 1; go-ipmi's Unpack needs 3 bytes.
    fn power_is_on(&mut self) -> bool {
        let rsp = self.call(netfn::CHASSIS, 0x01, &[]);
        assert_eq!(rsp.cc, cc::OK);
        assert!(rsp.data.len() >= 3, "{:?}", rsp.data);
        rsp.data[0] & 1 == 1
    }
}

/// Power read back twice: in go-ipmi's session and by ipmitool on a session of its own.
fn assert_power(bmc: &Bmc, session: &mut GoIpmi, on: bool, after: &str) {
    assert_eq!(
        session.power_is_on(),
        on,
        "Get Chassis Status after {after}"
    );
    let want = if on {
        "Chassis Power is on"
    } else {
        "Chassis Power is off"
    };
    assert_contains(&bmc.ipmitool_ok(IPMITOOL, "power status"), want);
}

#[test]
fn go_ipmi_lanplus_suite_3_session_power_and_close_as_bmclib_drives_them() {
    let bmc = Bmc::start_strict();
    let mut session = GoIpmi::connect(&bmc);

    // 6. bmclib `PowerStateGet`.
    assert!(!session.power_is_on(), "the simulated machine starts off");

    // 7. bmclib `PowerSet("on")` and `PowerSet("off")`: Chassis Control 01h / 00h
    // (ChassisControlPowerUp / ChassisControlPowerDown; ChassisControl, api_chassis.go).
    for (state, control, on) in [("on", 0x01u8, true), ("off", 0x00, false)] {
        assert_eq!(
            session.call(netfn::CHASSIS, 0x02, &[control]).cc,
            cc::OK,
            "{state}"
        );
        assert_power(&bmc, &mut session, on, state);
    }

    // 8. bmclib `Close`: Close Session with the BMC's session ID (closeLAN,
    // interface_lan.go).
    let bmc_id = session.bmc_id;
    let rsp = session.call(netfn::APP, 0x3C, &bmc_id.to_le_bytes());
    assert_eq!(rsp.cc, cc::OK);

    // The session is gone: a request in it is no longer answered.
    let after = session.client.request(netfn::CHASSIS, 0x01, &[], [7; 16]);
    let udp = &session.udp.0;
    udp.send(&after).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(udp.recv(&mut buf).is_err(), "a closed session answered");
}

/// bmclib `PowerSet("soft" | "reset" | "cycle")`: one Chassis Control each, with go-ipmi's
/// ChassisControlSoftShutdown 05h, ChassisControlHardReset 03h and ChassisControlPowerCycle
/// 02h (pkg/cmd/chassis/cmd_chassis_control.go; the root package re-exports them). bmclib
/// reports success exactly when the completion code is 0.
#[test]
fn go_ipmi_chassis_control_soft_reset_and_cycle_as_bmclib_power_set_sends_them() {
    let bmc = Bmc::start_strict();
    let mut session = GoIpmi::connect(&bmc);
    assert!(!session.power_is_on(), "the simulated machine starts off");

    // The IPMI spec (table 28-4) only recommends that a power cycle of a machine that is off
    // do nothing and answer D5h; this BMC documents "power cycle | off | as power on"
    // (README, power table; Redfish's PowerCycle is the same machine action), so that is
    // what is asserted.
    // A reset of a machine that is off has nothing to reset: D5h ("not in present state"),
    // which go-ipmi returns as an error and bmclib's PowerSet as (false, err).
    for (state, control, answer, on) in [
        ("cycle while off", 0x02u8, cc::OK, true),
        ("reset while on", 0x03, cc::OK, true),
        ("cycle while on", 0x02, cc::OK, true),
        ("soft while on", 0x05, cc::OK, false),
        ("soft while off", 0x05, cc::OK, false),
        ("reset while off", 0x03, cc::NOT_IN_PRESENT_STATE, false),
    ] {
        let rsp = session.call(netfn::CHASSIS, 0x02, &[control]);
        assert_eq!(rsp.cc, answer, "{state}");
        assert_power(&bmc, &mut session, on, state);
    }
}

/// bmclib `BootDeviceSet(device, persistent, efi)`: go-ipmi's `SetBootDevice`
/// (api_chassis.go) sends a single Set System Boot Options, parameter 5 with the parameter
/// valid bit clear (SetSystemBootOptionsParamFor; SetSystemBootOptionsParamRequest.Pack in
/// pkg/cmd/chassis/cmd_set_system_boot_options.go) and no set-in-progress or boot info
/// acknowledge around it. The five data bytes are BootOptionParam_BootFlags.Pack
/// (types_boot_option_params.go): byte 1 = 80h valid | 40h persistent | 20h EFI, byte 2 =
/// the device selector << 2, bytes 3-5 zero.
#[test]
fn go_ipmi_set_boot_device_as_bmclib_boot_device_set_sends_it() {
    let bmc = Bmc::start_strict();
    let mut session = GoIpmi::connect(&bmc);
    let flags = |persistent: bool, efi: bool, selector: u8| {
        let mut byte1 = 0x80;
        if persistent {
            byte1 |= 0x40;
        }
        if efi {
            byte1 |= 0x20;
        }
        [byte1, selector << 2, 0, 0, 0]
    };
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let get_flags = |session: &mut GoIpmi| {
        // go-ipmi's GetSystemBootOptionsParamRequest.Pack: selector, set 0, block 0.
        let rsp = session.call(netfn::CHASSIS, 0x09, &[0x05, 0x00, 0x00]);
        assert_eq!(rsp.cc, cc::OK);
        // Parameter version 1, parameter 5 valid, the five bytes
        // (GetSystemBootOptionsParamResponse.Unpack, BootOptionParam_BootFlags.Unpack).
        assert_eq!(rsp.data.len(), 7, "{:?}", rsp.data);
        assert_eq!(&rsp.data[..2], &[0x01, 0x05]);
        rsp.data[2..].to_vec()
    };

    // bmclib's device names and go-ipmi's BootDeviceSelector values; any other name is
    // BootDeviceSelectorNoOverride. Persistence and EFI vary so each bit is read back.
    for (device, selector, persistent, efi) in [
        ("pxe", 0x01u8, false, false),
        ("disk", 0x02, true, false),
        ("safe", 0x03, false, true),
        ("cdrom", 0x05, true, true),
        ("bios", 0x06, false, true),
        ("floppy", 0x0F, true, false),
        ("none", 0x00, false, true),
    ] {
        let sent = flags(persistent, efi, selector);
        let mut request = vec![0x05];
        request.extend_from_slice(&sent);
        let rsp = session.call(netfn::CHASSIS, 0x08, &request);
        assert_eq!(rsp.cc, cc::OK, "{device}");
        assert_eq!(get_flags(&mut session), sent, "{device}");
        let got = bmc.ipmitool_ok(IPMITOOL, "chassis bootparam get 5");
        assert_contains(&got, &format!("Boot parameter data: {}", hex(&sent)));
        assert_contains(
            &got,
            if persistent {
                "Options apply to all future boots"
            } else {
                "Options apply to only next boot"
            },
        );
        assert_contains(
            &got,
            if efi {
                "BIOS EFI boot"
            } else {
                "BIOS PC Compatible (legacy) boot"
            },
        );
    }

    // "diag" asks for BootDeviceSelectorForceDiagnosticPartition (04h): a VM has no
    // diagnostic partition, so the BMC refuses it (CCh) and keeps the flags it had; go-ipmi
    // returns the error, bmclib's BootDeviceSet (false, err).
    let before = get_flags(&mut session);
    let mut request = vec![0x05];
    request.extend_from_slice(&flags(false, false, 0x04));
    assert_eq!(
        session.call(netfn::CHASSIS, 0x08, &request).cc,
        cc::INVALID_DATA
    );
    assert_eq!(get_flags(&mut session), before);
    assert_contains(
        &bmc.ipmitool_ok(IPMITOOL, "chassis bootparam get 5"),
        &format!("Boot parameter data: {}", hex(&before)),
    );
}

/// bmclib `UserRead` calls go-ipmi's `ListUser(ctx, 0)` (cmd_get_user_access.go; renamed
/// `GetUsers` in pkg/client/api_app.go, same loop): for user ID 1, 2, ... Get User Access
/// (channel, user ID), then Get User Name (user ID), until the user ID reaches byte 1 of
/// Get User Access (maximum user IDs). Any Get User Access error ends the listing with that
/// error; a Get User Name CCh means "no name". bmclib drops users whose name is empty.
///
/// bmclib passes channel 0, the primary IPMB (IPMI 2.0 table 6-1), which a VM's BMC does
/// not have; it answers as for its LAN channel, so the listing bmclib reads is the one
/// ipmitool's `user list 1` shows.
#[test]
fn go_ipmi_list_user_as_bmclib_user_read_sends_it() {
    let bmc = Bmc::start_strict();
    let mut session = GoIpmi::connect(&bmc);

    // GetUserAccessRequest.Pack: channel, user ID; channel 0 as bmclib sends it, then the
    // LAN channel, which must list the same.
    let mut list_users = |channel: u8| {
        let mut users = Vec::new();
        for user in 1u8.. {
            let access = session.call(netfn::APP, 0x44, &[channel, user]);
            assert_eq!(access.cc, cc::OK, "user {user}");
            // GetUserAccessResponse.Unpack needs 4 bytes.
            assert_eq!(access.data.len(), 4, "{:?}", access.data);
            let name = session.call(netfn::APP, 0x46, &[user]);
            assert_eq!(name.cc, cc::OK, "user {user}");
            // GetUsernameResponse.Unpack: 16 bytes, trailing NULs trimmed.
            assert_eq!(name.data.len(), 16, "{:?}", name.data);
            let end = name.data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            let name = String::from_utf8(name.data[..end].to_vec()).unwrap();
            let b = access.data[3];
            users.push((
                user,
                name,
                b & 0x40 == 0, // Callin = !CallbackOnly
                b & 0x20 != 0, // LinkAuthEnabled
                b & 0x10 != 0, // IPMIMessagingEnabled
                b & 0x0F,      // MaxPrivLevel
            ));
            // Bits 7:6 of byte 2: the user's enable status (01b enabled, 10b disabled).
            assert_eq!(
                access.data[1] >> 6,
                if user == 2 { 1 } else { 2 },
                "user {user}"
            );
            if user >= access.data[0] {
                break;
            }
        }
        users
    };
    let on_ipmb = list_users(0x00);
    assert_eq!(on_ipmb, list_users(0x01));
    assert_eq!(
        on_ipmb,
        [
            (1, String::new(), true, false, false, 0x0F),
            (2, "admin".to_owned(), true, false, true, 0x04),
        ]
    );
}

/// Every call of bmclib's provider runs in the session `Open` made, which go-ipmi keeps
/// alive with Get Session Info, session index 0 = "this session" (keepSessionAlive →
/// GetCurrentSessionInfo in api_app.go; GetSessionInfoRequest.Pack sends the index alone).
/// The interval, DefaultKeepAliveIntervalSec, was not found in the source searched.
#[test]
fn go_ipmi_keepalive_get_current_session_info() {
    let bmc = Bmc::start_strict();
    let mut session = GoIpmi::connect(&bmc);
    let rsp = session.call(netfn::APP, 0x3D, &[0x00]);
    assert_eq!(rsp.cc, cc::OK);
    // GetSessionInfoResponse.Unpack: the LAN form is 18 bytes.
    let d = &rsp.data;
    assert_eq!(d.len(), 18, "{d:?}");
    assert_ne!(d[0], 0, "a session handle");
    assert_eq!(d[2], 1, "one active session");
    assert_eq!(d[3], 2, "user ID of admin");
    assert_eq!(
        d[4], 0x04,
        "Administrator, as Set Session Privilege Level made it"
    );
    assert_eq!(d[5], 0x11, "IPMI v2.0/RMCP+ on channel 1");
    assert_eq!(&d[6..10], &[127, 0, 0, 1]);
    let port = session.udp.0.local_addr().unwrap().port();
    assert_eq!(u16::from_le_bytes([d[16], d[17]]), port);
    // The session is still usable afterwards: the keepalive's point.
    assert!(!session.power_is_on());
}
