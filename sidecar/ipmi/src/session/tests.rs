//! Protocol tests: the crate's own client against the server with a virtual clock.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::client::{Client, ClientError};
use crate::crypto::CipherSuite;
use crate::rakp::{Exchange, OpenSessionRequest, status};

#[path = "sol_tests.rs"]
mod sol_tests;

const GUID: [u8; 16] = [7; 16];

fn peer() -> SocketAddr {
    "192.0.2.10:40000".parse().unwrap()
}

/// Deterministic "randomness" for tests.
fn counter_rng() -> impl FnMut(&mut [u8]) {
    let mut n: u8 = 1;
    move |buf: &mut [u8]| {
        for b in buf {
            *b = n;
            n = n.wrapping_mul(37).wrapping_add(11);
        }
    }
}

/// A server and a client talking through function calls, with a virtual clock.
type TestRng = Box<dyn FnMut(&mut [u8])>;

struct Pair {
    server: Server,
    now: Duration,
    rng: TestRng,
}

impl Pair {
    fn new() -> Self {
        let mut config = ServerConfig::new(b"admin", b"password", GUID);
        config.console = true;
        Self::with_config(config)
    }

    fn with_config(config: ServerConfig) -> Self {
        Pair {
            server: Server::new(config),
            now: Duration::from_secs(1000),
            rng: Box::new(counter_rng()),
        }
    }

    fn send(&mut self, datagram: &[u8]) -> Outcome {
        self.server
            .handle(datagram, peer(), self.now, &mut self.rng)
    }

    fn one_reply(&mut self, datagram: &[u8]) -> Vec<u8> {
        match self.send(datagram) {
            Outcome::Reply(r) if r.datagrams.len() == 1 => r.datagrams[0].clone(),
            other => panic!("expected one reply, got {other:?}"),
        }
    }

    fn login(&mut self, suite: u8, password: &[u8]) -> Result<Client, ClientError> {
        let suite = CipherSuite::by_id(suite).unwrap();
        let mut client = Client::new(
            b"admin",
            password,
            suite,
            Privilege::Administrator,
            0xC0FFEE,
        );
        let open = client.open_session_request();
        let rsp = self.one_reply(&open);
        let rakp1 = client.on_open_session_response(&rsp, &mut self.rng)?;
        let rakp2 = self.one_reply(&rakp1);
        let rakp3 = client.on_rakp2(&rakp2)?;
        let rakp4 = self.one_reply(&rakp3);
        client.on_rakp4(&rakp4)?;
        Ok(client)
    }

    /// Sends a request in the session; the app layer (here) answers `cc` with no data.
    fn call(&mut self, client: &mut Client, net_fn: u8, cmd: u8, data: &[u8]) -> IpmiResponse {
        let datagram = client.request(net_fn, cmd, data, [3; 16]);
        let reply = match self.send(&datagram) {
            Outcome::Reply(r) => r.datagrams[0].clone(),
            Outcome::Request(app) => {
                let response = app.request.response(cc::OK, &[0xAB]);
                self.server
                    .respond(&app.route, &response, &mut self.rng)
                    .expect("session alive")
            }
            Outcome::Console(c) => panic!("console input: {c:?}"),
            Outcome::Drop(d) => panic!("dropped: {d}"),
        };
        client.response(&reply).unwrap()
    }
}

#[test]
fn every_offered_suite_logs_in_and_carries_commands() {
    for suite in [1, 2, 3, 17] {
        let mut pair = Pair::new();
        let mut client = pair.login(suite, b"password").unwrap();
        // The session starts at USER: power control needs raising it first.
        let rsp = pair.call(&mut client, netfn::CHASSIS, 0x02, &[0]);
        assert_eq!(rsp.cc, cc::INSUFFICIENT_PRIVILEGE, "suite {suite}");
        let rsp = pair.call(&mut client, netfn::APP, 0x3B, &[4]);
        assert_eq!((rsp.cc, rsp.data.clone()), (cc::OK, vec![4]));
        let rsp = pair.call(&mut client, netfn::CHASSIS, 0x02, &[0]);
        assert_eq!((rsp.cc, rsp.data), (cc::OK, vec![0xAB]), "suite {suite}");
        assert_eq!(pair.server.active_sessions(), 1);
    }
}

#[test]
fn rakp_codes_match_an_independent_implementation() {
    // Computed with Python's hmac module over the same inputs.
    let mut exchange = Exchange {
        suite: CipherSuite::by_id(3).unwrap(),
        console_session_id: 0x11223344,
        bmc_session_id: 0xA1B2C3D4,
        console_random: core::array::from_fn(|i| i as u8),
        bmc_random: core::array::from_fn(|i| 16 + i as u8),
        bmc_guid: core::array::from_fn(|i| 32 + i as u8),
        role: 0x14,
        username: b"admin".to_vec(),
    };
    let key = crate::rakp::user_key(b"password");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(
        hex(&exchange.rakp2_code(&key)),
        "12cdcc14792ab581add850f89287deede5f3c248"
    );
    assert_eq!(
        hex(&exchange.rakp3_code(&key)),
        "4402012e214da511895a399bd77d5396e7998a4d"
    );
    let sik = exchange.sik(&key);
    assert_eq!(hex(&sik), "122c77c4b11ccd93251cbae6c34a9cb6310da154");
    assert_eq!(hex(&exchange.rakp4_icv(&sik)), "041029bb0bb4e33506109951");
    exchange.suite = CipherSuite::by_id(17).unwrap();
    assert_eq!(
        hex(&exchange.rakp2_code(&key)),
        "80e04f0a712638b0d32e47c9729aa96d20f826814c5141e5157aa190db4c1ac1"
    );
    let sik = exchange.sik(&key);
    assert_eq!(
        hex(&sik),
        "e5935f7199865ad961063477b0662684e2ce9b1da8f2b8d41c5ce127d37e9bcf"
    );
    assert_eq!(
        hex(&exchange.rakp4_icv(&sik)),
        "a17131352982074b03cf821812d7f689"
    );
}

#[test]
fn cipher_suite_zero_is_refused_with_a_status() {
    let mut pair = Pair::new();
    let open = OpenSessionRequest {
        tag: 5,
        max_privilege: 4,
        console_session_id: 1,
        auth: 0,
        integrity: 0,
        confidentiality: 0,
    };
    let datagram = crate::v20::encode(0x10, 0, 0, &open.encode(), None, [0; 16]);
    let rsp = pair.one_reply(&datagram);
    let payload = &rsp[4 + 12..];
    assert_eq!(payload[1], status::NO_CIPHER_SUITE_MATCH);
    assert_eq!(pair.server.table.iter().count(), 0, "nothing allocated");
}

#[test]
fn unknown_user_gets_rakp2_status_0x0d_at_once() {
    let mut pair = Pair::new();
    let mut client = Client::new(
        b"root",
        b"password",
        CipherSuite::by_id(3).unwrap(),
        Privilege::Administrator,
        9,
    );
    let rsp = pair.one_reply(&client.open_session_request());
    let rakp1 = client
        .on_open_session_response(&rsp, &mut pair.rng)
        .unwrap();
    match pair.send(&rakp1) {
        Outcome::Reply(r) => {
            assert_eq!(r.delay, Duration::ZERO);
            assert_eq!(
                r.event,
                Some(Event::LoginRefused {
                    reason: "unknown user"
                })
            );
            assert_eq!(
                client.on_rakp2(&r.datagrams[0]),
                Err(ClientError::Status(0x0D))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pair.server.table.iter().count(), 0, "session freed");
}

#[test]
fn bad_rakp3_gets_rakp4_status_0x0f_and_repeated_failures_slow_down() {
    let mut pair = Pair::new();
    let suite = CipherSuite::by_id(17).unwrap();
    for attempt in 0..6 {
        // A console that skips verifying RAKP 2 and sends a RAKP 3 made with a wrong key.
        let mut client = Client::new(b"admin", b"password", suite, Privilege::Administrator, 9);
        let rsp = pair.one_reply(&client.open_session_request());
        let rakp1 = client
            .on_open_session_response(&rsp, &mut pair.rng)
            .unwrap();
        let rakp2 = pair.one_reply(&rakp1);
        let mut rakp3 = client.on_rakp2(&rakp2).unwrap();
        let last = rakp3.len() - 1;
        rakp3[last] ^= 1;
        match pair.send(&rakp3) {
            Outcome::Reply(r) => {
                assert_eq!(
                    client.on_rakp4(&r.datagrams[0]),
                    Err(ClientError::Status(0x0F))
                );
                let expected = if attempt < 4 {
                    Duration::ZERO
                } else {
                    Duration::from_millis(250) * (1 << (attempt - 4))
                };
                assert_eq!(r.delay, expected, "attempt {attempt}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(pair.server.active_sessions(), 0);
}

#[test]
fn wrong_password_is_detected_by_the_console_and_frees_the_session() {
    let mut pair = Pair::new();
    let err = pair.login(3, b"wrong").err().unwrap();
    assert_eq!(
        err,
        ClientError::Protocol("RAKP 2 does not verify: wrong password")
    );
    assert_eq!(pair.server.active_sessions(), 0);
}

#[test]
fn replayed_and_corrupted_packets_are_dropped_without_effect() {
    let mut pair = Pair::new();
    let mut client = pair.login(3, b"password").unwrap();
    let datagram = client.request(netfn::APP, 0x3B, &[4], [1; 16]);
    assert!(matches!(pair.send(&datagram), Outcome::Reply(_)));
    assert_eq!(pair.send(&datagram), Outcome::Drop(Dropped::Replay));
    let mut bad = client.request(netfn::APP, 0x01, &[], [1; 16]);
    let n = bad.len();
    bad[n - 1] ^= 0x40;
    assert_eq!(pair.send(&bad), Outcome::Drop(Dropped::Integrity));
    for cut in 0..bad.len() {
        assert!(
            matches!(pair.send(&bad[..cut]), Outcome::Drop(_)),
            "cut at {cut}"
        );
    }
    // The forged packet did not advance the window: the session still works.
    let rsp = pair.call(&mut client, netfn::APP, 0x01, &[]);
    assert_eq!(rsp.cc, cc::OK);
}

#[test]
fn close_session_frees_and_idle_sessions_expire() {
    let mut pair = Pair::new();
    let mut client = pair.login(17, b"password").unwrap();
    let rsp = pair.call(&mut client, netfn::APP, 0x3C, &[0; 4][..0]);
    assert_eq!(rsp.cc, cc::REQUEST_LENGTH_INVALID);
    let id = pair.server.table.iter().next().unwrap().1.id;
    let rsp = pair.call(&mut client, netfn::APP, 0x3C, &id.to_le_bytes());
    assert_eq!(rsp.cc, cc::OK);
    assert_eq!(pair.server.active_sessions(), 0);
    let after = client.request(netfn::APP, 0x01, &[], [0; 16]);
    assert_eq!(pair.send(&after), Outcome::Drop(Dropped::UnknownSession));

    let mut client = pair.login(3, b"password").unwrap();
    pair.now += Duration::from_secs(61);
    let late = client.request(netfn::APP, 0x01, &[], [0; 16]);
    assert_eq!(pair.send(&late), Outcome::Drop(Dropped::UnknownSession));
    assert_eq!(pair.server.active_sessions(), 0);
}

#[test]
fn session_table_is_bounded() {
    let mut pair = Pair::new();
    pair.server = Server::new(ServerConfig {
        max_sessions: 2,
        ..ServerConfig::new(b"admin", b"password", GUID)
    });
    let _a = pair.login(3, b"password").unwrap();
    let _b = pair.login(3, b"password").unwrap();
    assert_eq!(
        pair.login(3, b"password").err(),
        Some(ClientError::Status(status::NO_RESOURCES))
    );
}

#[test]
fn privilege_cannot_exceed_what_the_session_asked_for() {
    let mut pair = Pair::new();
    let suite = CipherSuite::by_id(3).unwrap();
    let mut client = Client::new(b"admin", b"password", suite, Privilege::User, 1);
    let rsp = pair.one_reply(&client.open_session_request());
    let rakp1 = client
        .on_open_session_response(&rsp, &mut pair.rng)
        .unwrap();
    let rakp2 = pair.one_reply(&rakp1);
    let rakp3 = client.on_rakp2(&rakp2).unwrap();
    let rakp4 = pair.one_reply(&rakp3);
    client.on_rakp4(&rakp4).unwrap();
    let rsp = pair.call(&mut client, netfn::APP, 0x3B, &[4]);
    assert_eq!(rsp.cc, 0x81);
    let rsp = pair.call(&mut client, netfn::CHASSIS, 0x02, &[1]);
    assert_eq!(rsp.cc, cc::INSUFFICIENT_PRIVILEGE);
    let rsp = pair.call(&mut client, netfn::CHASSIS, 0x01, &[]);
    assert_eq!(rsp.cc, cc::OK, "USER reads state");
}

#[test]
fn ipmi15_md5_session_logs_in_and_checks_auth_codes() {
    use crate::crypto::{auth_type, v15_auth_code};
    let mut pair = Pair::new();
    let password = *b"password\0\0\0\0\0\0\0\0";
    let sessionless = |cmd: u8, data: &[u8]| {
        let msg = IpmiRequest::new(netfn::APP, cmd, 1, data).encode();
        crate::v15::encode(auth_type::NONE, 0, 0, &[0; 16], &msg)
    };
    let caps = pair.one_reply(&sessionless(0x38, &[0x0E, 4]));
    let caps = IpmiResponse::decode(crate::v15::decode(&caps[4..]).unwrap().message).unwrap();
    assert_eq!(caps.data[1] & 0x01, 0, "auth type NONE not offered");
    assert_eq!(caps.data[1] & 0x14, 0x14, "MD5 and password offered");

    let mut name = [0u8; 17];
    name[0] = auth_type::MD5;
    name[1..6].copy_from_slice(b"admin");
    let ch = pair.one_reply(&sessionless(0x39, &name));
    let ch = IpmiResponse::decode(crate::v15::decode(&ch[4..]).unwrap().message).unwrap();
    assert_eq!(ch.cc, 0);
    let id = u32::from_le_bytes(ch.data[..4].try_into().unwrap());
    let mut act = vec![auth_type::MD5, 4];
    act.extend_from_slice(&ch.data[4..20]);
    act.extend_from_slice(&100u32.to_le_bytes());
    let msg = IpmiRequest::new(netfn::APP, 0x3A, 2, &act).encode();
    let rsp = pair.one_reply(&crate::v15::encode(auth_type::MD5, 0, id, &password, &msg));
    let packet = crate::v15::decode(&rsp[4..]).unwrap();
    let rsp = IpmiResponse::decode(packet.message).unwrap();
    assert_eq!(rsp.cc, 0);
    assert_eq!(pair.server.active_sessions(), 1);
    let inbound = u32::from_le_bytes(rsp.data[5..9].try_into().unwrap());

    let msg = IpmiRequest::new(netfn::APP, 0x01, 3, &[]).encode();
    let good = crate::v15::encode(auth_type::MD5, inbound, id, &password, &msg);
    assert!(matches!(pair.send(&good), Outcome::Request(_)));
    assert_eq!(pair.send(&good), Outcome::Drop(Dropped::Replay));
    let wrong = crate::v15::encode(
        auth_type::MD5,
        inbound + 1,
        id,
        b"passwore\0\0\0\0\0\0\0\0",
        &msg,
    );
    assert_eq!(pair.send(&wrong), Outcome::Drop(Dropped::Integrity));
    let none = crate::v15::encode(auth_type::NONE, inbound + 1, id, &password, &msg);
    assert_eq!(pair.send(&none), Outcome::Drop(Dropped::Integrity));
    // The expected code is what the MD5 formula gives.
    let p = crate::v15::decode(&good[4..]).unwrap();
    assert_eq!(
        p.auth_code,
        Some(v15_auth_code(auth_type::MD5, &password, id, &msg, inbound))
    );
}

#[test]
fn asf_ping_is_answered() {
    let mut pair = Pair::new();
    let ping = [6, 0, 0xFF, 6, 0, 0, 0x11, 0xBE, 0x80, 7, 0, 0];
    let pong = pair.one_reply(&ping);
    assert_eq!(pong[9], 7);
}

#[test]
fn a_retransmitted_command_gets_the_same_answer_without_running_twice() {
    let mut pair = Pair::new();
    let mut client = pair.login(3, b"password").unwrap();
    pair.call(&mut client, netfn::APP, 0x3B, &[4]);
    let first = client.request(netfn::CHASSIS, 0x02, &[2], [1; 16]);
    let Outcome::Request(app) = pair.send(&first) else {
        panic!("power cycle goes to the app layer");
    };
    let response = app.request.response(cc::OK, &[]);
    pair.server
        .respond(&app.route, &response, &mut pair.rng)
        .unwrap();
    // The same IPMI message (same rqSeq) in a new session packet, as ipmitool retries.
    let retry = client.request_with_rq_seq(netfn::CHASSIS, 0x02, &[2], [2; 16], app.request.rq_seq);
    match pair.send(&retry) {
        Outcome::Reply(r) => assert_eq!(client.response(&r.datagrams[0]).unwrap().cc, cc::OK),
        other => panic!("expected the cached answer, got {other:?}"),
    }
    // A new command (next rqSeq) runs normally.
    let next = client.request(netfn::CHASSIS, 0x02, &[2], [3; 16]);
    assert!(matches!(pair.send(&next), Outcome::Request(_)));
}

#[test]
fn a_configured_kg_keys_the_session_and_is_required() {
    let suite = CipherSuite::by_id(17).unwrap();
    let mut config = ServerConfig::new(b"admin", b"password", GUID);
    config.kg = Some(zeroize::Zeroizing::new(crate::rakp::user_key(b"bmc-key")));
    let mut pair = Pair::new();
    pair.server = Server::new(config);
    let handshake = |pair: &mut Pair, mut client: Client| {
        let rsp = pair.one_reply(&client.open_session_request());
        let rakp1 = client.on_open_session_response(&rsp, &mut pair.rng)?;
        let rakp2 = pair.one_reply(&rakp1);
        let rakp3 = client.on_rakp2(&rakp2)?;
        let rakp4 = pair.one_reply(&rakp3);
        client.on_rakp4(&rakp4).map(|()| client)
    };
    let with_kg =
        Client::new(b"admin", b"password", suite, Privilege::Administrator, 1).with_kg(b"bmc-key");
    let mut client = handshake(&mut pair, with_kg).unwrap();
    assert_eq!(pair.call(&mut client, netfn::APP, 0x01, &[]).cc, cc::OK);
    let without = Client::new(b"admin", b"password", suite, Privilege::Administrator, 2);
    assert_eq!(
        handshake(&mut pair, without).err(),
        Some(ClientError::Protocol("RAKP 4 does not verify"))
    );
}

/// A pair whose randomness does not repeat within thousands of sessions (the counter RNG
/// above cycles after 256 bytes, too soon for hundreds of distinct session IDs).
fn big_pair(max_sessions: usize) -> Pair {
    let mut pair = Pair::with_config(ServerConfig {
        max_sessions,
        ..ServerConfig::new(b"admin", b"password", GUID)
    });
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    pair.rng = Box::new(move |buf: &mut [u8]| {
        for b in buf {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
    });
    pair
}

const GET_SESSION_INFO: u8 = 0x3D;

#[test]
fn session_info_reports_possible_sessions_in_six_bits_saturated() {
    for (capacity, reported) in [(1, 1), (32, 32), (63, 63), (64, 63), (1024, 63)] {
        let mut pair = big_pair(capacity);
        let mut client = pair.login(17, b"password").unwrap();
        let rsp = pair.call(&mut client, netfn::APP, GET_SESSION_INFO, &[0]);
        assert_eq!(rsp.cc, cc::OK);
        assert_eq!(rsp.data[0], 1, "own handle");
        assert_eq!(
            rsp.data[1], reported,
            "possible sessions for capacity {capacity}"
        );
        assert_eq!(rsp.data[2], 1, "active sessions");
    }
}

#[test]
fn sessions_past_the_255th_slot_work_and_report_handle_zero() {
    let mut pair = big_pair(300);
    let mut clients: Vec<Client> = (0..257)
        .map(|_| pair.login(3, b"password").unwrap())
        .collect();
    assert_eq!(pair.server.active_sessions(), 257);

    // The 255th session (slot 254) has the last handle; the 256th and 257th have none.
    let rsp = pair.call(&mut clients[254], netfn::APP, GET_SESSION_INFO, &[0]);
    assert_eq!(rsp.data[0], 255);
    let mut last = clients.pop().unwrap();
    let rsp = pair.call(&mut last, netfn::APP, GET_SESSION_INFO, &[0]);
    assert_eq!(rsp.cc, cc::OK);
    assert_eq!(rsp.data[0], 0, "no 8-bit handle for slot 256");
    assert_eq!(rsp.data[1], 63, "300 possible sessions, saturated");
    assert_eq!(rsp.data[2], 63, "257 active sessions, saturated");
    assert_eq!(
        rsp.data[4],
        Privilege::User.code(),
        "the session itself is described"
    );
    // Such a session still carries commands...
    let rsp = pair.call(&mut last, netfn::CHASSIS, 0x01, &[]);
    assert_eq!(rsp.data, vec![0xAB]);

    // ...and handle 255 addresses slot 254, never a slot beyond.
    let rsp = pair.call(&mut last, netfn::APP, GET_SESSION_INFO, &[0xFE, 255]);
    assert_eq!(rsp.data[0], 255);
    assert_eq!(rsp.data.len(), 18, "slot 254 holds an active session");
    let rsp = pair.call(&mut last, netfn::APP, GET_SESSION_INFO, &[0xFE, 0]);
    assert_eq!(
        rsp.cc,
        cc::REQUEST_LENGTH_INVALID,
        "handle 0 names no session"
    );

    // Close Session by ID reaches a session without a handle.
    let id = pair.server.table.get(256).unwrap().id;
    let rsp = pair.call(&mut clients[0], netfn::APP, 0x3B, &[4]);
    assert_eq!(rsp.cc, cc::OK, "ADMINISTRATOR may close other sessions");
    let rsp = pair.call(&mut clients[0], netfn::APP, 0x3C, &id.to_le_bytes());
    assert_eq!(rsp.cc, cc::OK);
    assert_eq!(pair.server.active_sessions(), 256);
}

#[test]
fn without_legacy_logins_only_suites_3_and_17_and_no_ipmi15_are_offered_or_accepted() {
    use crate::crypto::auth_type;
    let mut config = ServerConfig::new(b"admin", b"password", GUID);
    config.legacy = false;
    let mut pair = Pair::with_config(config);
    let sessionless = |cmd: u8, data: &[u8]| {
        let msg = IpmiRequest::new(netfn::APP, cmd, 1, data).encode();
        crate::v15::encode(auth_type::NONE, 0, 0, &[0; 16], &msg)
    };
    let decode = |reply: Vec<u8>| {
        IpmiResponse::decode(crate::v15::decode(&reply[4..]).unwrap().message).unwrap()
    };
    // Extended capabilities: v2.0 only, no v1.5 auth types.
    let caps = decode(pair.one_reply(&sessionless(0x38, &[0x8E, 4])));
    assert_eq!(caps.data[1], 0x80, "only the v2.0 extended bit");
    assert_eq!(caps.data[3], 0x02, "IPMI v2.0 connections only");
    let caps = decode(pair.one_reply(&sessionless(0x38, &[0x0E, 4])));
    assert_eq!(caps.data[1] & 0x14, 0, "no MD5, no straight password");
    // Get Channel Cipher Suites lists 17 and 3 only.
    let suites = decode(pair.one_reply(&sessionless(0x54, &[0x0E, 0, 0x80])));
    let ids: Vec<u8> = suites.data[1..].chunks(5).map(|r| r[1]).collect();
    assert_eq!(ids, vec![17, 3]);
    // A v1.5 challenge is refused.
    let mut name = [0u8; 17];
    name[0] = auth_type::MD5;
    name[1..6].copy_from_slice(b"admin");
    let challenge = decode(pair.one_reply(&sessionless(0x39, &name)));
    assert_eq!(challenge.cc, cc::INVALID_DATA);
    // Suites 1 and 2 are refused at Open Session; 3 and 17 log in.
    for weak in [1, 2] {
        assert!(pair.login(weak, b"password").is_err(), "suite {weak}");
    }
    for strong in [3, 17] {
        assert!(pair.login(strong, b"password").is_ok(), "suite {strong}");
    }
    assert_eq!(pair.server.active_sessions(), 2);
}

#[test]
fn tightening_the_login_policy_ends_the_sessions_it_no_longer_allows_at_once() {
    use crate::crypto::auth_type;
    let mut pair = Pair::new();
    let mut weak: Vec<Client> = [1, 2]
        .into_iter()
        .map(|suite| pair.login(suite, b"password").unwrap())
        .collect();
    let mut strong: Vec<Client> = [3, 17]
        .into_iter()
        .map(|suite| pair.login(suite, b"password").unwrap())
        .collect();
    // A v1.5 session: challenge, activate.
    let password = *b"password\0\0\0\0\0\0\0\0";
    let mut name = [0u8; 17];
    name[0] = auth_type::MD5;
    name[1..6].copy_from_slice(b"admin");
    let msg = IpmiRequest::new(netfn::APP, 0x39, 1, &name).encode();
    let ch = pair.one_reply(&crate::v15::encode(auth_type::NONE, 0, 0, &[0; 16], &msg));
    let ch = IpmiResponse::decode(crate::v15::decode(&ch[4..]).unwrap().message).unwrap();
    let v15_id = u32::from_le_bytes(ch.data[..4].try_into().unwrap());
    let mut act = vec![auth_type::MD5, 4];
    act.extend_from_slice(&ch.data[4..20]);
    act.extend_from_slice(&100u32.to_le_bytes());
    let msg = IpmiRequest::new(netfn::APP, 0x3A, 2, &act).encode();
    let rsp = pair.one_reply(&crate::v15::encode(
        auth_type::MD5,
        0,
        v15_id,
        &password,
        &msg,
    ));
    let rsp = IpmiResponse::decode(crate::v15::decode(&rsp[4..]).unwrap().message).unwrap();
    let inbound = u32::from_le_bytes(rsp.data[5..9].try_into().unwrap());
    assert_eq!(pair.server.active_sessions(), 5);

    assert!(
        pair.server.set_legacy(true).is_empty(),
        "loosening ends nothing"
    );
    let mut ended = pair.server.set_legacy(false);
    ended.sort();
    let mut wanted: Vec<u32> = weak.iter().map(|c| c.bmc_session_id().unwrap()).collect();
    wanted.push(v15_id);
    wanted.sort();
    assert_eq!(ended, wanted);
    assert_eq!(pair.server.active_sessions(), 2);
    // The strong sessions carry on; the ended ones are unknown now.
    for client in &mut strong {
        let rsp = pair.call(client, netfn::APP, 0x3B, &[4]);
        assert_eq!(rsp.cc, cc::OK);
    }
    for client in &mut weak {
        let datagram = client.request(netfn::APP, 0x01, &[], [3; 16]);
        assert_eq!(pair.send(&datagram), Outcome::Drop(Dropped::UnknownSession));
    }
    let msg = IpmiRequest::new(netfn::APP, 0x01, 3, &[]).encode();
    let v15 = crate::v15::encode(auth_type::MD5, inbound, v15_id, &password, &msg);
    assert_eq!(pair.send(&v15), Outcome::Drop(Dropped::UnknownSession));
    // And no new weak login gets in.
    assert!(pair.login(1, b"password").is_err());
}
