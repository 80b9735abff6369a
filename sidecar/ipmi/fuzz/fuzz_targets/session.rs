//! Structured session fuzzing: a real login with the crate's client (suite from the input),
//! then a mix of legitimate requests, replays, bit flips, truncations and arbitrary bytes
//! with the clock moving. Invariants: only untampered, first-time legitimate packets reach
//! the application layer; the table never exceeds its bound; nothing panics.
#![no_main]

use std::collections::HashSet;
use std::time::Duration;

use arbitrary::Arbitrary;
use kubevirt_bmc_ipmi::client::Client;
use kubevirt_bmc_ipmi::crypto::CipherSuite;
use kubevirt_bmc_ipmi::{Outcome, Privilege, Random, Server, ServerConfig};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Step {
    Legit { netfn: u8, cmd: u8, data: Vec<u8> },
    Replay { index: u8 },
    Flip { index: u8, byte: u16, bit: u8 },
    Truncate { index: u8, len: u16 },
    Raw(Vec<u8>),
    Wait { secs: u8 },
    OpenAnother { suite: u8 },
}

#[derive(Debug, Arbitrary)]
struct Input {
    suite: u8,
    max_sessions: u8,
    steps: Vec<Step>,
}

fuzz_target!(|input: Input| {
    let suites = [1, 2, 3, 17];
    let suite = CipherSuite::by_id(suites[input.suite as usize % 4]).unwrap();
    let max = 1 + input.max_sessions as usize % 4;
    let mut server = Server::new(ServerConfig {
        max_sessions: max,
        ..ServerConfig::new(b"admin", b"password", [1; 16])
    });
    let mut n = 0u32;
    let mut rng = move |b: &mut [u8]| {
        for x in b {
            n = n.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *x = (n >> 16) as u8;
        }
    };
    let peer = "192.0.2.1:623".parse().unwrap();
    let mut now = Duration::from_secs(100);
    let login = |server: &mut Server, rng: &mut dyn Random, now, suite| {
        let mut client = Client::new(b"admin", b"password", suite, Privilege::Administrator, 7);
        let step = |server: &mut Server, rng: &mut dyn Random, d: &[u8]| match server
            .handle(d, peer, now, rng)
        {
            Outcome::Reply(r) if r.datagrams.len() == 1 => Some(r.datagrams[0].clone()),
            _ => None,
        };
        let rsp = step(server, rng, &client.open_session_request())?;
        let rakp1 = client.on_open_session_response(&rsp, rng).ok()?;
        let rakp2 = step(server, rng, &rakp1)?;
        let rakp3 = client.on_rakp2(&rakp2).ok()?;
        let rakp4 = step(server, rng, &rakp3)?;
        client.on_rakp4(&rakp4).ok()?;
        Some(client)
    };
    let Some(mut client) = login(&mut server, &mut rng, now, suite) else {
        panic!("a clean login failed");
    };
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut delivered: HashSet<Vec<u8>> = HashSet::new();
    for step in input.steps.into_iter().take(64) {
        let (datagram, legit_fresh) = match step {
            Step::Legit { netfn, cmd, data } => {
                let d = client.request(netfn & 0x3E, cmd, &data[..data.len().min(64)], [5; 16]);
                sent.push(d.clone());
                (d, true)
            }
            Step::Replay { index } if !sent.is_empty() => {
                (sent[index as usize % sent.len()].clone(), false)
            }
            Step::Flip { index, byte, bit } if !sent.is_empty() => {
                let mut d = sent[index as usize % sent.len()].clone();
                let i = 4 + byte as usize % (d.len() - 4);
                d[i] ^= 1 << (bit % 8);
                (d, false)
            }
            Step::Truncate { index, len } if !sent.is_empty() => {
                let d = &sent[index as usize % sent.len()];
                (d[..len as usize % d.len()].to_vec(), false)
            }
            Step::Raw(bytes) => (bytes, false),
            Step::Wait { secs } => {
                now += Duration::from_secs(secs as u64);
                continue;
            }
            Step::OpenAnother { suite } => {
                let s = CipherSuite::by_id(suites[suite as usize % 4]).unwrap();
                let _ = login(&mut server, &mut rng, now, s);
                assert!(server.active_sessions() <= max);
                continue;
            }
            _ => continue,
        };
        match server.handle(&datagram, peer, now, &mut rng) {
            Outcome::Request(app) => {
                // Suite 1 has no integrity: a tampered packet is indistinguishable there.
                if suite.integrity_len() > 0 {
                    assert!(
                        legit_fresh,
                        "tampered or replayed packet reached the app layer"
                    );
                }
                assert!(delivered.insert(datagram), "delivered twice");
                let _ = server.respond(&app.route, &app.request.response(0, &[]), &mut rng);
            }
            Outcome::Reply(_) | Outcome::Console(_) | Outcome::Drop(_) => {}
        }
        assert!(server.active_sessions() <= max);
    }
});
