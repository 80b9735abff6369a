//! go-ipmi (github.com/bougou/go-ipmi), the pure-Go IPMI library bmclib's IPMI provider
//! uses, as it opens a lanplus session with cipher suite 3 and drives power. No go-ipmi
//! binary runs here: each datagram is built from the field values go-ipmi's source puts
//! in it (pkg/client/*.go, named per step), and sent to `kubevirt-bmc simulate`.
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

#[test]
fn go_ipmi_lanplus_suite_3_session_power_and_close_as_bmclib_drives_them() {
    let bmc = Bmc::start_strict();
    let udp = Udp::new(&bmc);
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

    let mut call = |netfn: u8, cmd: u8, data: &[u8]| {
        let datagram = client.request(netfn, cmd, data, [7; 16]);
        let rsp = client.response(&udp.exchange(&datagram)).unwrap();
        assert_eq!((rsp.netfn, rsp.cmd), (netfn + 1, cmd));
        rsp
    };

    // 5. Set Session Privilege Level to Administrator (connect20), the session's first
    // authenticated, encrypted message: sequence 1.
    let rsp = call(netfn::APP, 0x3B, &[0x04]);
    assert_eq!((rsp.cc, rsp.data.clone()), (cc::OK, vec![0x04]));

    // 6. Power state: Get Chassis Status (GetChassisStatus, api_chassis.go), bit 0 of
    // byte 1 is "power on".
    let rsp = call(netfn::CHASSIS, 0x01, &[]);
    assert_eq!(rsp.cc, cc::OK);
    assert!(rsp.data.len() >= 3, "{:?}", rsp.data);
    assert_eq!(rsp.data[0] & 1, 0, "the simulated machine starts off");

    // 7. Power on and off: Chassis Control 01h / 00h (ChassisControl), each read back
    // with Get Chassis Status and by ipmitool on its own session.
    for (control, on, ipmitool_says) in [
        (0x01u8, 1u8, "Chassis Power is on"),
        (0x00, 0, "Chassis Power is off"),
    ] {
        assert_eq!(call(netfn::CHASSIS, 0x02, &[control]).cc, cc::OK);
        let rsp = call(netfn::CHASSIS, 0x01, &[]);
        assert_eq!(rsp.data[0] & 1, on, "after control {control:#04x}");
        assert_contains(
            &bmc.ipmitool_ok("-I lanplus -C 3", "power status"),
            ipmitool_says,
        );
    }

    // 8. Close Session with the BMC's session ID (closeLAN, interface_lan.go).
    let rsp = call(netfn::APP, 0x3C, &bmc_id.to_le_bytes());
    assert_eq!(rsp.cc, cc::OK);

    // The session is gone: a request in it is no longer answered.
    let after = client.request(netfn::CHASSIS, 0x01, &[], [7; 16]);
    udp.0.send(&after).unwrap();
    udp.0
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(udp.0.recv(&mut buf).is_err(), "a closed session answered");
}
