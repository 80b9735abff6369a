use super::*;
use crate::message::netfn;

const MS: Duration = Duration::from_millis(1);

fn inbound(seq: u8, ack: u8, accepted: u8, op: u8, data: &[u8]) -> Vec<u8> {
    let mut p = vec![seq, ack, accepted, op];
    p.extend_from_slice(data);
    p
}

#[test]
fn typed_characters_are_acknowledged_and_delivered_once() {
    let config = SolConfig::new(623);
    let mut link = SolLink::new();
    let p = inbound(3, 0, 0, 0, b"ls\r");
    let first = link.receive(&decode(&p).unwrap(), &config, MS);
    assert_eq!(first.to_console, b"ls\r");
    assert_eq!(first.replies, vec![vec![0, 3, 3, 0]]);
    // Our ACK was lost: the console retransmits; it is ACKed again, not typed twice.
    let again = link.receive(&decode(&p).unwrap(), &config, 2 * MS);
    assert!(again.to_console.is_empty());
    assert_eq!(again.replies, vec![vec![0, 3, 3, 0]]);
}

#[test]
fn output_waits_for_the_ack_and_accumulates_meanwhile() {
    let config = SolConfig::new(623);
    let mut link = SolLink::new();
    // Below the threshold: held until the accumulate interval (5 ms) passes.
    assert!(link.output(b"he", &config, Duration::ZERO).is_empty());
    let sent = link.tick(&config, 5 * MS);
    assert_eq!(sent, vec![inbound(1, 0, 0, 0, b"he")]);
    // While packet 1 is unacknowledged, more output accumulates.
    assert!(link.output(b"llo", &config, 6 * MS).is_empty());
    assert!(link.tick(&config, 7 * MS).is_empty());
    let acked = link.receive(&decode(&[0, 1, 2, 0]).unwrap(), &config, 8 * MS);
    assert_eq!(acked.replies, vec![inbound(2, 0, 0, 0, b"llo")]);
}

#[test]
fn unacknowledged_output_is_retransmitted_then_given_up() {
    let config = SolConfig::new(623);
    let mut link = SolLink::new();
    let first = link.output(&[b'x'; 200], &config, Duration::ZERO);
    assert_eq!(first.len(), 1);
    assert!(
        link.tick(&config, 50 * MS).is_empty(),
        "before the interval"
    );
    for i in 1..=u32::from(config.retry_count()) {
        let again = link.tick(&config, 100 * MS * i);
        assert_eq!(again, first, "retry {i}");
    }
    assert!(link.tick(&config, Duration::from_secs(5)).is_empty());
    assert_eq!(link.dropped, 200);
    assert!(!link.busy());
}

#[test]
fn a_partial_ack_resends_the_rest_and_a_nack_holds_output() {
    let config = SolConfig::new(623);
    let mut link = SolLink::new();
    link.output(&[b'a'; 100], &config, Duration::ZERO);
    let r = link.receive(&decode(&[0, 1, 60, 0]).unwrap(), &config, MS);
    assert_eq!(r.replies, vec![inbound(2, 0, 0, 0, &[b'a'; 40])]);
    let r = link.receive(&decode(&[0, 2, 0, 0x40]).unwrap(), &config, 2 * MS);
    assert!(r.replies.is_empty(), "NACK: nothing sent");
    let r = link.receive(&decode(&[0, 0, 0, 0]).unwrap(), &config, 3 * MS);
    assert_eq!(r.replies, vec![inbound(3, 0, 0, 0, &[b'a'; 40])]);
}

#[test]
fn break_is_reported_and_sequence_numbers_skip_zero() {
    let config = SolConfig::new(623);
    let mut link = SolLink::new();
    let r = link.receive(&decode(&[1, 0, 0, 0x10]).unwrap(), &config, MS);
    assert!(r.send_break);
    let mut seqs = Vec::new();
    for i in 0..16u8 {
        let out = link.output(&[b'z'; 96], &config, MS);
        seqs.push(out[0][0]);
        link.receive(&decode(&[0, out[0][0], 96, 0]).unwrap(), &config, MS);
        let _ = i;
    }
    assert_eq!(seqs[..15], (1..=15).collect::<Vec<u8>>()[..]);
    assert_eq!(seqs[15], 1);
}

#[test]
fn short_packets_are_malformed() {
    assert!(decode(&[1, 0, 0]).is_err());
}

fn get(config: &SolConfig, param: u8) -> (u8, Vec<u8>) {
    let r = get_config(
        config,
        &IpmiRequest::new(netfn::TRANSPORT, GET_SOL_CONFIG, 1, &[1, param, 0, 0]),
    );
    (r.cc, r.data)
}

fn set(config: &mut SolConfig, param: u8, value: &[u8]) -> u8 {
    let mut data = vec![1, param];
    data.extend_from_slice(value);
    set_config(
        config,
        &IpmiRequest::new(netfn::TRANSPORT, SET_SOL_CONFIG, 1, &data),
    )
    .cc
}

#[test]
fn configuration_parameters_read_back_what_was_set() {
    let mut c = SolConfig::new(6230);
    assert_eq!(get(&c, 1), (0, vec![0x11, 1]));
    assert_eq!(get(&c, 8), (0, vec![0x11, 0x56, 0x18]));
    assert_eq!(get(&c, 7), (0, vec![0x11, 1]));
    assert_eq!(set(&mut c, 1, &[0]), 0);
    assert!(!c.enabled);
    assert_eq!(set(&mut c, 6, &[0x07]), 0);
    assert_eq!(get(&c, 6), (0, vec![0x11, 0x07]));
    assert_eq!(set(&mut c, 2, &[0xC3]), 0);
    assert_eq!(c.privilege(), 3);
    assert_eq!(set(&mut c, 0, &[1]), 0);
    assert_eq!(set(&mut c, 0, &[1]), 0x81, "set already in progress");
}

#[test]
fn bad_configuration_changes_nothing() {
    let mut c = SolConfig::new(623);
    let before = c.clone();
    assert_eq!(set(&mut c, 5, &[0x03]), cc::INVALID_DATA, "bit rate");
    assert_eq!(
        set(&mut c, 2, &[0x01]),
        cc::INVALID_DATA,
        "callback privilege"
    );
    assert_eq!(set(&mut c, 8, &[1, 2]), 0x82, "port is read-only");
    assert_eq!(set(&mut c, 1, &[1, 2]), cc::REQUEST_LENGTH_INVALID);
    assert_eq!(set(&mut c, 42, &[1]), 0x80);
    assert_eq!(get(&c, 42).0, 0x80);
    assert_eq!(c, before);
}

#[test]
fn no_packet_carries_more_characters_than_an_ack_can_count() {
    let config = SolConfig::new(623);
    let mut link = SolLink::new();
    let mut total = 0;
    let mut out = link.output(&[b'y'; 1000], &config, Duration::ZERO);
    while let Some(p) = out.pop() {
        let n = p.len() - 4;
        assert!(n <= 255 && n + 4 <= MAX_PAYLOAD as usize, "{n} characters");
        total += n;
        out = link
            .receive(&decode(&[0, p[0], n as u8, 0]).unwrap(), &config, MS)
            .replies;
    }
    assert_eq!(total, 1000, "every character once, none repeated");
}
