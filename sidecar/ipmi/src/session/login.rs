//! Logging in: RMCP+ Open Session and RAKP 1-4, and IPMI 1.5 Get Session Challenge and
//! Activate Session. Unknown users and wrong passwords are answered at once with the
//! spec's status codes (not silence), recorded per source and slowed down when repeated.

use std::net::SocketAddr;
use std::time::Duration;

use super::table::{Link, Session, State, Window};
use super::{Event, Outcome, Random, Reply, Server};
use crate::crypto::{CipherSuite, auth_type, ct_eq, v15_auth_code};
use crate::message::{IpmiRequest, IpmiResponse, cc, netfn};
use crate::privilege::Privilege;
use crate::rakp::{Exchange, OpenSessionRequest, OpenSessionResponse, Rakp1, RakpReply, status};
use crate::{v15, v20};

const MAX_PENDING_CHALLENGES: usize = 16;
const ACTIVATE_SESSION: u8 = 0x3A;

/// An IPMI 1.5 challenge handed out and not yet used.
#[derive(Debug, Clone)]
pub(super) struct Challenge {
    pub session_id: u32,
    challenge: [u8; 16],
    auth_type: u8,
    peer: SocketAddr,
    issued: Duration,
}

fn reply(datagram: Vec<u8>, delay: Duration, event: Option<Event>) -> Outcome {
    Outcome::Reply(Reply {
        datagrams: vec![datagram],
        delay,
        event,
    })
}

fn sessionless_v20(payload_type: u8, payload: &[u8]) -> Vec<u8> {
    v20::encode(payload_type, 0, 0, payload, None, [0; 16])
}

/// RAKP 2 and RAKP 4 have one shape: the console's tag, a status, the console's session ID
/// and the message's data, sent outside any session after the login-failure delay.
fn rakp_answer(
    payload_type: u8,
    tag: u8,
    delay: Duration,
) -> impl Fn(u8, u32, Vec<u8>, Option<Event>) -> Outcome {
    move |status, console_id, data, event| {
        let message = RakpReply {
            tag,
            status,
            session_id: console_id,
            data,
        };
        reply(
            sessionless_v20(payload_type, &message.encode()),
            delay,
            event,
        )
    }
}

impl Server {
    fn new_session_id(&self, rng: &mut dyn Random) -> u32 {
        loop {
            let mut b = [0u8; 4];
            rng.fill(&mut b);
            let id = u32::from_le_bytes(b);
            let taken = self.table.find(id).is_some()
                || self.pending_challenges.iter().any(|c| c.session_id == id);
            if id != 0 && !taken {
                return id;
            }
        }
    }

    fn refuse(&mut self, peer: SocketAddr, now: Duration, reason: &'static str) -> Option<Event> {
        self.failures.record(peer.ip(), now);
        Some(Event::LoginRefused { reason })
    }

    pub(super) fn open_session(
        &mut self,
        payload: &[u8],
        peer: SocketAddr,
        now: Duration,
        rng: &mut dyn Random,
    ) -> Outcome {
        let request = match OpenSessionRequest::decode(payload) {
            Ok(r) => r,
            Err(e) => return Outcome::Drop(e.into()),
        };
        let refuse = |status: u8, reason: &'static str| {
            let response = OpenSessionResponse {
                tag: request.tag,
                status,
                max_privilege: 0,
                console_session_id: request.console_session_id,
                accepted: None,
            };
            reply(
                sessionless_v20(v20::payload::OPEN_SESSION_RESPONSE, &response.encode()),
                Duration::ZERO,
                Some(Event::LoginRefused { reason }),
            )
        };
        let Some(suite) =
            CipherSuite::from_algorithms(request.auth, request.integrity, request.confidentiality)
        else {
            return refuse(status::NO_CIPHER_SUITE_MATCH, "cipher suite not offered");
        };
        if !self.config.legacy && !super::strong_suite(suite.id) {
            return refuse(
                status::NO_CIPHER_SUITE_MATCH,
                "cipher suite without integrity or confidentiality turned off",
            );
        }
        let max_privilege = match request.max_privilege {
            0 => Privilege::Administrator,
            n => match Privilege::from_nibble(n) {
                Some(p) => p,
                None => return refuse(status::INVALID_ROLE, "privilege level not available"),
            },
        };
        let id = self.new_session_id(rng);
        let session = Session {
            id,
            peer,
            last_seen: now,
            state: State::Opened {
                console_id: request.console_session_id,
                suite,
                max_privilege,
            },
        };
        if self.table.insert(session).is_none() {
            return refuse(status::NO_RESOURCES, "session table full");
        }
        let response = OpenSessionResponse {
            tag: request.tag,
            status: status::OK,
            max_privilege: max_privilege.code(),
            console_session_id: request.console_session_id,
            accepted: Some((id, suite)),
        };
        Outcome::reply(sessionless_v20(
            v20::payload::OPEN_SESSION_RESPONSE,
            &response.encode(),
        ))
    }

    pub(super) fn rakp1(
        &mut self,
        payload: &[u8],
        peer: SocketAddr,
        now: Duration,
        rng: &mut dyn Random,
    ) -> Outcome {
        let rakp1 = match Rakp1::decode(payload) {
            Ok(r) => r,
            Err(e) => return Outcome::Drop(e.into()),
        };
        let delay = self.failures.delay(peer.ip(), now);
        let answer = rakp_answer(v20::payload::RAKP2, rakp1.tag, delay);
        let slot = self.table.find(rakp1.bmc_session_id).filter(|&slot| {
            let s = self.table.get(slot).expect("found");
            s.peer == peer && matches!(s.state, State::Opened { .. })
        });
        let Some(slot) = slot else {
            return answer(status::INVALID_SESSION_ID, 0, Vec::new(), None);
        };
        let State::Opened {
            console_id,
            suite,
            max_privilege,
        } = self.table.get(slot).expect("found").state
        else {
            unreachable!("filtered above")
        };
        let role = match Privilege::from_nibble(rakp1.role) {
            Some(p) if p <= max_privilege => p,
            _ => {
                self.table.remove(slot);
                let event = Some(Event::LoginRefused {
                    reason: "role above the session's maximum",
                });
                return answer(status::UNAUTHORIZED_ROLE, console_id, Vec::new(), event);
            }
        };
        if !ct_eq(&rakp1.username, &self.config.username) || rakp1.username.is_empty() {
            self.table.remove(slot);
            let event = self.refuse(peer, now, "unknown user");
            return answer(status::UNAUTHORIZED_NAME, console_id, Vec::new(), event);
        }
        let mut bmc_random = [0u8; 16];
        rng.fill(&mut bmc_random);
        let exchange = Exchange {
            suite,
            console_session_id: console_id,
            bmc_session_id: rakp1.bmc_session_id,
            console_random: rakp1.console_random,
            bmc_random,
            bmc_guid: self.config.guid,
            role: rakp1.role,
            username: rakp1.username.clone(),
        };
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&bmc_random);
        data.extend_from_slice(&self.config.guid);
        data.extend_from_slice(&exchange.rakp2_code(&self.user_key[..]));
        let session = self.table.get_mut(slot).expect("found");
        session.last_seen = now;
        session.state = State::Rakp2Sent {
            exchange: Box::new(exchange),
            max_privilege: role,
        };
        answer(status::OK, console_id, data, None)
    }

    pub(super) fn rakp3(&mut self, payload: &[u8], peer: SocketAddr, now: Duration) -> Outcome {
        let rakp3 = match RakpReply::decode(payload) {
            Ok(r) => r,
            Err(e) => return Outcome::Drop(e.into()),
        };
        let delay = self.failures.delay(peer.ip(), now);
        let answer = rakp_answer(v20::payload::RAKP4, rakp3.tag, delay);
        let slot = self.table.find(rakp3.session_id).filter(|&slot| {
            let s = self.table.get(slot).expect("found");
            s.peer == peer && matches!(s.state, State::Rakp2Sent { .. })
        });
        let Some(slot) = slot else {
            return answer(status::INVALID_SESSION_ID, 0, Vec::new(), None);
        };
        let session = self.table.remove(slot).expect("found");
        let State::Rakp2Sent {
            exchange,
            max_privilege,
        } = session.state
        else {
            unreachable!("filtered above")
        };
        let console_id = exchange.console_session_id;
        if rakp3.status != status::OK {
            // The console could not verify RAKP 2: it holds another password.
            let event = self.refuse(peer, now, "console rejected RAKP 2 (wrong password)");
            return Outcome::Reply(Reply {
                datagrams: Vec::new(),
                delay: Duration::ZERO,
                event,
            });
        }
        let expected = exchange.rakp3_code(&self.user_key[..]);
        if !ct_eq(&rakp3.data, &expected) {
            let event = self.refuse(peer, now, "wrong password (RAKP 3)");
            return answer(
                status::INVALID_INTEGRITY_CHECK,
                console_id,
                Vec::new(),
                event,
            );
        }
        let kg: &[u8] = match &self.config.kg {
            Some(kg) => &kg[..],
            None => &self.user_key[..],
        };
        let sik = zeroize::Zeroizing::new(exchange.sik(kg));
        let keys = exchange.suite.keys(&sik);
        let icv = exchange.rakp4_icv(&sik);
        let id = session.id;
        self.table.insert(Session {
            id,
            peer,
            last_seen: now,
            state: State::Active20 {
                console_id,
                keys: Box::new(keys),
                link: Link::new(max_privilege, Window::starting_at(1), 1),
            },
        });
        self.failures.clear(peer.ip());
        let event = Some(Event::SessionOpened {
            id,
            protocol: "IPMI v2.0 RMCP+",
            cipher_suite: Some(exchange.suite.id),
        });
        answer(status::OK, console_id, icv, event)
    }

    pub(super) fn session_challenge(
        &mut self,
        request: &IpmiRequest,
        peer: SocketAddr,
        now: Duration,
        rng: &mut dyn Random,
    ) -> (IpmiResponse, Option<Event>) {
        let data = &request.data;
        if data.len() != 17 {
            return (request.response(cc::REQUEST_LENGTH_INVALID, &[]), None);
        }
        if data[0] != auth_type::MD5 && data[0] != auth_type::PASSWORD {
            return (request.response(cc::INVALID_DATA, &[]), None);
        }
        if !self.config.legacy {
            // IPMI v1.5 logins are turned off: no challenge, as for an unknown auth type.
            return (
                request.response(cc::INVALID_DATA, &[]),
                Some(Event::LoginRefused {
                    reason: "IPMI v1.5 sessions are turned off",
                }),
            );
        }
        let name = &data[1..];
        let name = &name[..name.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)];
        if name.is_empty() || !ct_eq(name, &self.config.username) {
            let event = self.refuse(peer, now, "unknown user");
            return (request.response(0x81, &[]), event);
        }
        let session_id = self.new_session_id(rng);
        let mut challenge = [0u8; 16];
        rng.fill(&mut challenge);
        if self.pending_challenges.len() >= MAX_PENDING_CHALLENGES {
            self.pending_challenges.remove(0);
        }
        self.pending_challenges.push(Challenge {
            session_id,
            challenge,
            auth_type: data[0],
            peer,
            issued: now,
        });
        let mut out = session_id.to_le_bytes().to_vec();
        out.extend_from_slice(&challenge);
        (request.response(cc::OK, &out), None)
    }

    pub(super) fn activate_session(
        &mut self,
        packet: &v15::Packet<'_>,
        peer: SocketAddr,
        now: Duration,
        rng: &mut dyn Random,
    ) -> Outcome {
        let index = self
            .pending_challenges
            .iter()
            .position(|c| c.session_id == packet.session_id)
            .expect("caller checked");
        let challenge = self.pending_challenges.remove(index);
        let Ok(request) = IpmiRequest::decode(packet.message) else {
            return Outcome::Drop(super::Dropped::Ignored("malformed Activate Session"));
        };
        let delay = self.failures.delay(peer.ip(), now);
        let password = self.v15_password.clone();
        // Refusals go out unauthenticated: the console may not share our password.
        let refuse_plain = |response: IpmiResponse, event: Option<Event>| {
            let datagram = v15::encode(auth_type::NONE, 0, 0, &password, &response.encode());
            reply(datagram, delay, event)
        };
        if (request.netfn, request.cmd) != (netfn::APP, ACTIVATE_SESSION) {
            return refuse_plain(request.response(cc::INSUFFICIENT_PRIVILEGE, &[]), None);
        }
        let expected = v15_auth_code(
            challenge.auth_type,
            &password,
            packet.session_id,
            packet.message,
            packet.seq,
        );
        let code_ok = packet.auth_code.is_some_and(|c| ct_eq(&c, &expected));
        let data = &request.data;
        let fresh = now.saturating_sub(challenge.issued) <= self.config.setup_timeout;
        if !code_ok
            || packet.auth_type != challenge.auth_type
            || challenge.peer != peer
            || !fresh
            || data.len() < 22
            || !ct_eq(&data[2..18], &challenge.challenge)
        {
            let event = self.refuse(peer, now, "wrong password or challenge (Activate Session)");
            return refuse_plain(request.response(cc::INSUFFICIENT_PRIVILEGE, &[]), event);
        }
        if data[0] != challenge.auth_type {
            return refuse_plain(request.response(cc::INVALID_DATA, &[]), None);
        }
        let Some(max_privilege) = Privilege::from_nibble(data[1]) else {
            return refuse_plain(request.response(0x86, &[]), None);
        };
        let outbound = u32::from_le_bytes(data[18..22].try_into().expect("4 bytes")).max(1);
        let mut b = [0u8; 4];
        rng.fill(&mut b);
        let inbound = u32::from_le_bytes(b).max(1);
        let id = challenge.session_id;
        let session = Session {
            id,
            peer,
            last_seen: now,
            state: State::Active15 {
                auth_type: challenge.auth_type,
                link: Link::new(max_privilege, Window::starting_at(inbound), outbound),
            },
        };
        let Some(slot) = self.table.insert(session) else {
            return refuse_plain(request.response(0x81, &[]), None);
        };
        self.failures.clear(peer.ip());
        // The response carries the console's initial outbound sequence number: FreeIPMI
        // starts its window there.
        let seq = self
            .table
            .get_mut(slot)
            .and_then(|s| s.link())
            .map_or(outbound, |l| l.next_outbound());
        let mut out = vec![challenge.auth_type];
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&inbound.to_le_bytes());
        out.push(max_privilege.code());
        let response = request.response(cc::OK, &out);
        let datagram = v15::encode(challenge.auth_type, seq, id, &password, &response.encode());
        let event = Some(Event::SessionOpened {
            id,
            protocol: "IPMI v1.5",
            cipher_suite: None,
        });
        reply(datagram, delay, event)
    }
}
