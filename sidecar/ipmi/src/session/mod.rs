//! The BMC side of IPMI over LAN: a session table and the state machine that turns each
//! received datagram into an [`Outcome`]. Time and randomness come from the caller.
//!
//! Session setup (Open Session, RAKP, Get Session Challenge, Activate Session) and the
//! session commands (privilege, close, info, authentication capabilities, cipher suites)
//! are answered here. Every other command that passes integrity, the sequence window and
//! the privilege check goes up as an [`AppRequest`]; its response comes back through
//! [`Server::respond`], which seals it for the session.

mod commands;
mod login;
mod payload;
mod table;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::crypto::auth_type;
use crate::error::CodecError;
use crate::message::{IpmiRequest, IpmiResponse, cc, netfn};
use crate::privilege::{self, Privilege};
use crate::{rmcp, v15, v20};

pub use commands::LAN_CHANNEL;
pub use payload::{ConsoleInput, SolSend};
// Failures is also Redfish's failed-login throttle: one rule for both front ends.
pub use table::{Failures, Window};
use table::{State, Table};

/// A source of random bytes (session IDs, RAKP nonces, IVs, challenges).
pub trait Random {
    fn fill(&mut self, buf: &mut [u8]);
}

impl<F: FnMut(&mut [u8])> Random for F {
    fn fill(&mut self, buf: &mut [u8]) {
        self(buf)
    }
}

/// The one user, the BMC's identity and the limits of the session table.
pub struct ServerConfig {
    pub username: Vec<u8>,
    pub password: Zeroizing<Vec<u8>>,
    /// The BMC key Kg; None means Kg is the user's key (the IPMI default).
    pub kg: Option<Zeroizing<[u8; 20]>>,
    /// The managed system's GUID as it goes on the wire (RAKP 2 and 4).
    pub guid: [u8; 16],
    pub max_sessions: usize,
    pub idle_timeout: Duration,
    /// How long a session being set up (Open Session to RAKP 3) may wait.
    pub setup_timeout: Duration,
    /// Whether the machine has a serial console SOL can reach.
    pub console: bool,
    /// The SOL configuration at start (its port is what Activate Payload reports).
    pub sol: crate::sol::SolConfig,
    /// Also accept IPMI v1.5 sessions (MD5, straight password) and cipher suites 1 and 2.
    /// Off: RMCP+ with suites 3 and 17 only, every message authenticated and encrypted.
    pub legacy: bool,
}

/// Suites with integrity and confidentiality (3 and 17): the only ones offered unless
/// legacy logins are on.
pub fn strong_suite(id: u8) -> bool {
    matches!(id, 3 | 17)
}

impl ServerConfig {
    pub fn new(username: &[u8], password: &[u8], guid: [u8; 16]) -> Self {
        ServerConfig {
            username: username.to_vec(),
            password: Zeroizing::new(password.to_vec()),
            kg: None,
            guid,
            max_sessions: 32,
            idle_timeout: Duration::from_secs(60),
            setup_timeout: Duration::from_secs(10),
            console: false,
            sol: crate::sol::SolConfig::new(623),
            legacy: true,
        }
    }
}

/// Something worth a log line; never carries secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    SessionOpened {
        id: u32,
        protocol: &'static str,
        cipher_suite: Option<u8>,
    },
    SessionClosed {
        id: u32,
    },
    SessionsExpired {
        ids: Vec<u32>,
    },
    LoginRefused {
        reason: &'static str,
    },
    SolActivated {
        id: u32,
    },
    SolDeactivated {
        id: u32,
    },
}

/// Why a datagram got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("malformed: {0}")]
    Malformed(#[from] CodecError),
    #[error("not answered: {0}")]
    Ignored(&'static str),
    #[error("no such session")]
    UnknownSession,
    #[error("session used from another address")]
    WrongPeer,
    #[error("sequence number replayed or out of window")]
    Replay,
    #[error("integrity check failed")]
    Integrity,
}

/// What the caller sends back, perhaps after a delay (failed-login slow-down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub datagrams: Vec<Vec<u8>>,
    pub delay: Duration,
    pub event: Option<Event>,
}

/// A command for the application layer (chassis, boot, SDR...), already authenticated,
/// in sequence and allowed at the session's privilege.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRequest {
    pub request: IpmiRequest,
    pub privilege: Privilege,
    pub route: Route,
}

/// Where the response to an [`AppRequest`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    slot: usize,
    session_id: u32,
    pub peer: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reply(Reply),
    Request(AppRequest),
    /// Characters (or a break) for the serial port, with the SOL ACK to send.
    Console(ConsoleInput),
    Drop(Dropped),
}

impl Outcome {
    fn reply(datagram: Vec<u8>) -> Self {
        Outcome::Reply(Reply {
            datagrams: vec![datagram],
            delay: Duration::ZERO,
            event: None,
        })
    }
}

/// How a sessionless request arrived, so its answer goes back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sessionless {
    V15,
    V20,
}

pub struct Server {
    config: ServerConfig,
    table: Table,
    failures: Failures,
    pending_challenges: Vec<login::Challenge>,
    user_key: Zeroizing<[u8; 20]>,
    v15_password: Zeroizing<[u8; 16]>,
    expired: Vec<u32>,
    sol_config: crate::sol::SolConfig,
    sol: Option<payload::ActiveSol>,
    sol_events: Vec<Event>,
    sol_elsewhere: Vec<(Vec<u8>, SocketAddr)>,
}

impl Server {
    pub fn new(config: ServerConfig) -> Self {
        let user_key = Zeroizing::new(crate::rakp::user_key(&config.password));
        let mut v15_password = Zeroizing::new([0u8; 16]);
        let n = config.password.len().min(16);
        v15_password[..n].copy_from_slice(&config.password[..n]);
        Server {
            sol_config: config.sol.clone(),
            sol: None,
            sol_events: Vec::new(),
            sol_elsewhere: Vec::new(),
            table: Table::new(config.max_sessions),
            config,
            failures: Failures::default(),
            pending_challenges: Vec::new(),
            user_key,
            v15_password,
            expired: Vec::new(),
        }
    }

    pub fn legacy(&self) -> bool {
        self.config.legacy
    }

    /// Applies a changed login policy at once. Tightened, the sessions it no longer allows
    /// (IPMI v1.5, suites 1 and 2, and logins under way with them) end now, as on a BMC whose
    /// administrator turned those off; their IDs are returned.
    pub fn set_legacy(&mut self, legacy: bool) -> Vec<u32> {
        self.config.legacy = legacy;
        if legacy {
            return Vec::new();
        }
        // v1.5 challenges not yet answered by Activate Session.
        self.pending_challenges.clear();
        self.table.remove_where(table::Session::is_legacy)
    }

    pub fn active_sessions(&self) -> usize {
        self.table.active_count()
    }

    /// Handles one received datagram.
    pub fn handle(
        &mut self,
        datagram: &[u8],
        peer: SocketAddr,
        now: Duration,
        rng: &mut dyn Random,
    ) -> Outcome {
        let freed = self
            .table
            .expire(now, self.config.idle_timeout, self.config.setup_timeout);
        self.expired.extend(freed);
        let outcome = match rmcp::decode(datagram) {
            Err(e) => Outcome::Drop(e.into()),
            Ok(rmcp::Rmcp::Ignored) => Outcome::Drop(Dropped::Ignored("RMCP ACK or ASF message")),
            Ok(rmcp::Rmcp::Ping { seq, tag }) => {
                let mut datagrams = Vec::new();
                if seq != rmcp::NO_ACK_SEQ {
                    datagrams.push(rmcp::ack(seq));
                }
                datagrams.push(rmcp::pong(seq, tag));
                Outcome::Reply(Reply {
                    datagrams,
                    delay: Duration::ZERO,
                    event: None,
                })
            }
            Ok(rmcp::Rmcp::Ipmi(body)) => match body.first() {
                Some(&auth_type::RMCP_PLUS) => self.handle_v20(body, peer, now, rng),
                Some(_) => self.handle_v15(body, peer, now, rng),
                None => Outcome::Drop(
                    CodecError::Truncated {
                        what: "IPMI session header",
                    }
                    .into(),
                ),
            },
        };
        self.with_expiry_event(outcome)
    }

    fn with_expiry_event(&mut self, mut outcome: Outcome) -> Outcome {
        if self.expired.is_empty() {
            return outcome;
        }
        if let Outcome::Reply(reply) = &mut outcome
            && reply.event.is_none()
        {
            reply.event = Some(Event::SessionsExpired {
                ids: std::mem::take(&mut self.expired),
            });
        }
        outcome
    }

    fn handle_v20(
        &mut self,
        body: &[u8],
        peer: SocketAddr,
        now: Duration,
        rng: &mut dyn Random,
    ) -> Outcome {
        let packet = match v20::decode(body) {
            Ok(p) => p,
            Err(e) => return Outcome::Drop(e.into()),
        };
        let header = packet.header;
        if header.session_id == 0 {
            let payload = match packet.plain_payload() {
                Ok(p) => p,
                Err(e) => return Outcome::Drop(e.into()),
            };
            return match header.payload_type {
                v20::payload::OPEN_SESSION_REQUEST => self.open_session(payload, peer, now, rng),
                v20::payload::RAKP1 => self.rakp1(payload, peer, now, rng),
                v20::payload::RAKP3 => self.rakp3(payload, peer, now),
                v20::payload::IPMI => self.sessionless(payload, Sessionless::V20, peer, now, rng),
                _ => Outcome::Drop(Dropped::Ignored("payload type outside a session")),
            };
        }
        let Some(slot) = self.table.find(header.session_id) else {
            return Outcome::Drop(Dropped::UnknownSession);
        };
        let session = self.table.get_mut(slot).expect("found above");
        if session.peer != peer {
            return Outcome::Drop(Dropped::WrongPeer);
        }
        let State::Active20 { keys, link, .. } = &mut session.state else {
            return Outcome::Drop(Dropped::UnknownSession);
        };
        let payload = match packet.open(keys) {
            Ok(p) => p,
            Err(CodecError::Integrity { .. }) => return Outcome::Drop(Dropped::Integrity),
            Err(e) => return Outcome::Drop(e.into()),
        };
        // Only after integrity: a forged packet must not move the window.
        if !link.inbound.accept(header.seq) {
            return Outcome::Drop(Dropped::Replay);
        }
        session.last_seen = now;
        match header.payload_type {
            v20::payload::IPMI => self.in_session(slot, &payload, peer, rng),
            v20::payload::SOL => self.sol_packet(slot, &payload, now, rng),
            _ => Outcome::Drop(Dropped::Ignored("payload type not served")),
        }
    }

    fn handle_v15(
        &mut self,
        body: &[u8],
        peer: SocketAddr,
        now: Duration,
        rng: &mut dyn Random,
    ) -> Outcome {
        let packet = match v15::decode(body) {
            Ok(p) => p,
            Err(e) => return Outcome::Drop(e.into()),
        };
        if packet.session_id == 0 {
            if packet.auth_type != auth_type::NONE {
                return Outcome::Drop(Dropped::Ignored("authenticated packet outside a session"));
            }
            return self.sessionless(packet.message, Sessionless::V15, peer, now, rng);
        }
        if self
            .pending_challenges
            .iter()
            .any(|c| c.session_id == packet.session_id)
        {
            return self.activate_session(&packet, peer, now, rng);
        }
        let Some(slot) = self.table.find(packet.session_id) else {
            return Outcome::Drop(Dropped::UnknownSession);
        };
        let password = self.v15_password.clone();
        let session = self.table.get_mut(slot).expect("found above");
        if session.peer != peer {
            return Outcome::Drop(Dropped::WrongPeer);
        }
        let State::Active15 {
            auth_type: session_auth,
            link,
        } = &mut session.state
        else {
            return Outcome::Drop(Dropped::UnknownSession);
        };
        let expected = crate::crypto::v15_auth_code(
            *session_auth,
            &password,
            packet.session_id,
            packet.message,
            packet.seq,
        );
        let code_ok = packet
            .auth_code
            .is_some_and(|code| crate::crypto::ct_eq(&code, &expected));
        if packet.auth_type != *session_auth || !code_ok {
            return Outcome::Drop(Dropped::Integrity);
        }
        if !link.inbound.accept(packet.seq) {
            return Outcome::Drop(Dropped::Replay);
        }
        session.last_seen = now;
        self.in_session(slot, packet.message, peer, rng)
    }

    /// An IPMI request inside an established session.
    fn in_session(
        &mut self,
        slot: usize,
        message: &[u8],
        peer: SocketAddr,
        rng: &mut dyn Random,
    ) -> Outcome {
        let request = match IpmiRequest::decode(message) {
            Ok(r) => r,
            Err(e) => return Outcome::Drop(e.into()),
        };
        let session = self.table.get_mut(slot).expect("caller checked");
        let session_id = session.id;
        let privilege = session.link().map_or(Privilege::Callback, |l| l.privilege);
        if let Some(outcome) = self.session_command(slot, &request, rng) {
            return outcome;
        }
        if let Some(outcome) = self.payload_command(slot, &request, rng) {
            return outcome;
        }
        let retransmitted = self
            .table
            .get_mut(slot)
            .and_then(|s| s.link())
            .and_then(|l| l.last.as_ref())
            .filter(|(key, _)| key.as_slice() == message)
            .map(|(_, response)| response.clone());
        if let Some(response) = retransmitted {
            return self
                .seal(slot, &response, rng)
                .map_or(Outcome::Drop(Dropped::UnknownSession), Outcome::reply);
        }
        if privilege::required(request.netfn, request.cmd) > privilege {
            let response = request.response(cc::INSUFFICIENT_PRIVILEGE, &[]);
            return self
                .seal(slot, &response, rng)
                .map_or(Outcome::Drop(Dropped::UnknownSession), Outcome::reply);
        }
        if let Some(link) = self.table.get_mut(slot).and_then(|s| s.link()) {
            link.awaiting = Some(message.to_vec());
        }
        Outcome::Request(AppRequest {
            request,
            privilege,
            route: Route {
                slot,
                session_id,
                peer,
            },
        })
    }

    /// The answer to an [`AppRequest`], sealed for its session; None when the session has
    /// gone meanwhile (closed or expired).
    pub fn respond(
        &mut self,
        route: &Route,
        response: &IpmiResponse,
        rng: &mut dyn Random,
    ) -> Option<Vec<u8>> {
        let session = self.table.get_mut(route.slot)?;
        if session.id != route.session_id {
            return None;
        }
        if let Some(link) = session.link()
            && let Some(key) = link.awaiting.take()
        {
            // The raw message holds rqSeq (byte 4) and the command (byte 5).
            if key.get(4).map(|b| b >> 2) == Some(response.rq_seq)
                && key.get(5) == Some(&response.cmd)
            {
                link.last = Some((key, response.clone()));
            }
        }
        self.seal(route.slot, response, rng)
    }

    fn seal(
        &mut self,
        slot: usize,
        response: &IpmiResponse,
        rng: &mut dyn Random,
    ) -> Option<Vec<u8>> {
        self.seal_payload(slot, v20::payload::IPMI, &response.encode(), rng)
    }

    fn seal_payload(
        &mut self,
        slot: usize,
        payload_type: u8,
        message: &[u8],
        rng: &mut dyn Random,
    ) -> Option<Vec<u8>> {
        let password = self.v15_password.clone();
        let session = self.table.get_mut(slot)?;
        let id = session.id;
        match &mut session.state {
            State::Active20 {
                console_id,
                keys,
                link,
            } => {
                let mut iv = [0u8; 16];
                if keys.encrypts() {
                    rng.fill(&mut iv);
                }
                let seq = link.next_outbound();
                Some(v20::encode(
                    payload_type,
                    *console_id,
                    seq,
                    message,
                    Some(keys),
                    iv,
                ))
            }
            State::Active15 { auth_type, link } if payload_type == v20::payload::IPMI => {
                let seq = link.next_outbound();
                Some(v15::encode(*auth_type, seq, id, &password, message))
            }
            _ => None,
        }
    }

    /// A request outside any session: only what session setup needs is answered.
    fn sessionless(
        &mut self,
        message: &[u8],
        via: Sessionless,
        peer: SocketAddr,
        now: Duration,
        rng: &mut dyn Random,
    ) -> Outcome {
        let request = match IpmiRequest::decode(message) {
            Ok(r) => r,
            Err(e) => return Outcome::Drop(e.into()),
        };
        let (response, event) = match (request.netfn, request.cmd) {
            (netfn::APP, commands::GET_CHANNEL_AUTH_CAPS) => {
                (self.channel_auth_caps(&request), None)
            }
            (netfn::APP, commands::GET_CHANNEL_CIPHER_SUITES) => (
                commands::channel_cipher_suites(&request, self.config.legacy),
                None,
            ),
            (netfn::APP, commands::GET_SESSION_CHALLENGE) if via == Sessionless::V15 => {
                self.session_challenge(&request, peer, now, rng)
            }
            _ => (request.response(cc::INSUFFICIENT_PRIVILEGE, &[]), None),
        };
        let delay = if event.is_some() {
            self.failures.delay(peer.ip(), now)
        } else {
            Duration::ZERO
        };
        let message = response.encode();
        let datagram = match via {
            Sessionless::V15 => v15::encode(auth_type::NONE, 0, 0, &[0; 16], &message),
            Sessionless::V20 => v20::encode(v20::payload::IPMI, 0, 0, &message, None, [0; 16]),
        };
        Outcome::Reply(Reply {
            datagrams: vec![datagram],
            delay,
            event,
        })
    }
}
