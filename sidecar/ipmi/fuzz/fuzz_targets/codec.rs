//! Every decoder on arbitrary bytes: no panic, and what decodes re-encodes to itself.
//! Also the whole server on arbitrary datagrams with no session: it may answer session
//! setup, but never hands a command to the application layer.
#![no_main]

use std::time::Duration;

use kubevirt_bmc_ipmi::message::{IpmiRequest, IpmiResponse};
use kubevirt_bmc_ipmi::rakp::{OpenSessionRequest, Rakp1, RakpReply};
use kubevirt_bmc_ipmi::{Outcome, Server, ServerConfig, rmcp, v15, v20};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rmcp::decode(data);
    let _ = v15::decode(data);
    let _ = v20::decode(data).map(|p| p.plain_payload().map(<[u8]>::to_vec));
    if let Ok(req) = IpmiRequest::decode(data) {
        assert_eq!(IpmiRequest::decode(&req.encode()).unwrap(), req);
    }
    if let Ok(rsp) = IpmiResponse::decode(data) {
        assert_eq!(IpmiResponse::decode(&rsp.encode()).unwrap(), rsp);
    }
    if let Ok(open) = OpenSessionRequest::decode(data) {
        assert_eq!(OpenSessionRequest::decode(&open.encode()).unwrap(), open);
    }
    if let Ok(r1) = Rakp1::decode(data) {
        assert_eq!(Rakp1::decode(&r1.encode()).unwrap(), r1);
    }
    let _ = RakpReply::decode(data);

    let mut server = Server::new(ServerConfig::new(b"admin", b"password", [1; 16]));
    let mut n = 0u8;
    let mut rng = |b: &mut [u8]| {
        for x in b {
            n = n.wrapping_add(1);
            *x = n;
        }
    };
    let peer = "192.0.2.1:623".parse().unwrap();
    match server.handle(data, peer, Duration::from_secs(1), &mut rng) {
        Outcome::Request(_) => panic!("a command passed with no session"),
        Outcome::Console(_) => panic!("SOL input passed with no session"),
        Outcome::Reply(reply) => {
            for d in reply.datagrams {
                assert!(rmcp::decode(&d).is_ok(), "reply is not RMCP");
            }
        }
        Outcome::Drop(_) => {}
    }
    assert_eq!(server.active_sessions(), 0);
});
