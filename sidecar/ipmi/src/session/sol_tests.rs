//! SOL through the session layer: activation rules and packets both ways.

use super::*;
use crate::message::netfn;

const ACTIVATE: [u8; 6] = [1, 1, 0xC0, 0, 0, 0];

fn sol_of(client: &Client, datagram: &[u8]) -> Vec<u8> {
    let (kind, payload) = client.open(datagram).unwrap();
    assert_eq!(kind, v20::payload::SOL);
    payload
}

#[test]
fn one_sol_session_per_machine_and_another_session_can_end_it() {
    let mut pair = Pair::new();
    let mut first = pair.login(17, b"password").unwrap();
    let mut second = pair.login(3, b"password").unwrap();
    for c in [&mut first, &mut second] {
        assert_eq!(pair.call(c, netfn::APP, 0x3B, &[4]).cc, 0);
    }
    let rsp = pair.call(&mut first, netfn::APP, 0x48, &ACTIVATE);
    assert_eq!(rsp.cc, 0);
    assert_eq!(rsp.data.len(), 12);
    assert_eq!(&rsp.data[8..10], &623u16.to_le_bytes());
    // The owner retransmitting Activate gets the same answer; another session gets 0x80.
    assert_eq!(pair.call(&mut first, netfn::APP, 0x48, &ACTIVATE).cc, 0);
    assert_eq!(pair.call(&mut second, netfn::APP, 0x48, &ACTIVATE).cc, 0x80);
    let status = pair.call(&mut second, netfn::APP, 0x4A, &[1]);
    assert_eq!(status.data, vec![1, 1, 0]);

    let datagram = second.request(netfn::APP, 0x49, &ACTIVATE, [3; 16]);
    let Outcome::Reply(reply) = pair.send(&datagram) else {
        panic!("no reply")
    };
    assert_eq!(second.response(&reply.datagrams[0]).unwrap().cc, 0);
    // The owner is told on its SOL stream that the BMC deactivated the payload.
    assert_eq!(sol_of(&first, &reply.datagrams[1]), vec![0, 0, 0, 0x10]);
    assert!(matches!(reply.event, Some(Event::SolDeactivated { .. })));
    assert_eq!(
        pair.call(&mut second, netfn::APP, 0x4A, &[1]).data,
        vec![1, 0, 0]
    );
    assert_eq!(pair.call(&mut second, netfn::APP, 0x49, &ACTIVATE).cc, 0x80);
    assert_eq!(pair.call(&mut second, netfn::APP, 0x48, &ACTIVATE).cc, 0);
}

#[test]
fn characters_flow_both_ways_inside_the_session() {
    let mut pair = Pair::new();
    let mut client = pair.login(17, b"password").unwrap();
    assert_eq!(pair.call(&mut client, netfn::APP, 0x48, &ACTIVATE).cc, 0);
    let typed = client.sol(&[1, 0, 0, 0, b'h', b'i'], [9; 16]);
    let Outcome::Console(input) = pair.send(&typed) else {
        panic!("typed characters not delivered")
    };
    assert_eq!(input.bytes, b"hi");
    assert!(!input.send_break);
    assert_eq!(sol_of(&client, &input.datagrams[0]), vec![0, 1, 2, 0]);

    let now = pair.now;
    let out = pair
        .server
        .sol_output(&[b'.'; 100], now, &mut pair.rng)
        .expect("SOL active");
    assert_eq!(out.peer, peer());
    let payload = sol_of(&client, &out.datagrams[0]);
    assert_eq!(payload[..4], [1, 0, 0, 0]);
    assert_eq!(&payload[4..], &[b'.'; 100]);
}

#[test]
fn closing_the_owner_session_frees_the_payload() {
    let mut pair = Pair::new();
    let mut first = pair.login(17, b"password").unwrap();
    let mut second = pair.login(17, b"password").unwrap();
    assert_eq!(pair.call(&mut first, netfn::APP, 0x48, &ACTIVATE).cc, 0);
    let id = pair.call(&mut first, netfn::APP, 0x3D, &[0]);
    assert_eq!(id.cc, 0);
    let close = first.request(netfn::APP, 0x3C, &[0, 0, 0, 0, id.data[0]], [3; 16]);
    assert!(matches!(pair.send(&close), Outcome::Reply(_)));
    assert_eq!(pair.call(&mut second, netfn::APP, 0x48, &ACTIVATE).cc, 0);
    assert!(
        pair.server
            .take_sol_events()
            .iter()
            .any(|e| matches!(e, Event::SolDeactivated { .. }))
    );
}

#[test]
fn sol_is_refused_without_a_console_or_when_disabled() {
    let mut pair = Pair::with_config(ServerConfig::new(b"admin", b"password", GUID));
    let mut client = pair.login(17, b"password").unwrap();
    assert_eq!(pair.call(&mut client, netfn::APP, 0x48, &ACTIVATE).cc, 0x81);

    let mut pair = Pair::new();
    let mut client = pair.login(17, b"password").unwrap();
    assert_eq!(pair.call(&mut client, netfn::APP, 0x3B, &[4]).cc, 0);
    assert_eq!(
        pair.call(&mut client, netfn::TRANSPORT, 0x21, &[1, 1, 0])
            .cc,
        0
    );
    assert_eq!(pair.call(&mut client, netfn::APP, 0x48, &ACTIVATE).cc, 0x81);
    let packet = client.sol(&[1, 0, 0, 0, b'x'], [9; 16]);
    assert!(matches!(
        pair.send(&packet),
        Outcome::Drop(Dropped::Ignored(_))
    ));
}

#[test]
fn changing_sol_configuration_needs_administrator() {
    let mut pair = Pair::new();
    let mut client = pair.login(17, b"password").unwrap();
    assert_eq!(pair.call(&mut client, netfn::APP, 0x3B, &[2]).cc, 0);
    assert_eq!(
        pair.call(&mut client, netfn::TRANSPORT, 0x21, &[1, 1, 0])
            .cc,
        0xD4
    );
    let got = pair.call(&mut client, netfn::TRANSPORT, 0x22, &[1, 1, 0, 0]);
    assert_eq!(got.data, vec![0x11, 1]);
}

#[test]
fn payload_support_and_version_name_ipmi_and_sol() {
    let mut pair = Pair::new();
    let mut client = pair.login(17, b"password").unwrap();
    let support = pair.call(&mut client, netfn::APP, 0x4E, &[1]);
    assert_eq!(support.data, vec![0x03, 0, 0x3F, 0, 0, 0, 0, 0]);
    assert_eq!(
        pair.call(&mut client, netfn::APP, 0x4F, &[1, 1]).data,
        vec![0x10]
    );
    assert_eq!(pair.call(&mut client, netfn::APP, 0x4F, &[1, 2]).cc, 0x80);
    assert_eq!(pair.call(&mut client, netfn::APP, 0x4E, &[]).cc, 0xC7);
}
