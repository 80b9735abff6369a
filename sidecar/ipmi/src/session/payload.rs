//! Payload activation (Activate/Deactivate Payload, Get Payload Activation Status), the
//! SOL configuration commands and SOL packets inside a session. One SOL instance per BMC:
//! the serial port has one pair of wires.

use std::net::SocketAddr;
use std::time::Duration;

use super::table::State;
use super::{Dropped, Event, Outcome, Random, Reply, Server};
use crate::message::{IpmiRequest, IpmiResponse, cc, netfn};
use crate::privilege::Privilege;
use crate::sol::{self, SolLink};
use crate::v20;

pub const ACTIVATE_PAYLOAD: u8 = 0x48;
pub const DEACTIVATE_PAYLOAD: u8 = 0x49;
pub const GET_PAYLOAD_ACTIVATION_STATUS: u8 = 0x4A;
pub const GET_CHANNEL_PAYLOAD_SUPPORT: u8 = 0x4E;
pub const GET_CHANNEL_PAYLOAD_VERSION: u8 = 0x4F;

const ALREADY_ACTIVE: u8 = 0x80;
const PAYLOAD_DISABLED: u8 = 0x81;
const ALREADY_DEACTIVATED: u8 = 0x80;
const CANNOT_ACTIVATE_WITHOUT_ENCRYPTION: u8 = 0x84;
const SOL_INSTANCE: u8 = 1;

/// The SOL payload instance and the session that owns it.
#[derive(Debug)]
pub(super) struct ActiveSol {
    pub slot: usize,
    pub session_id: u32,
    pub peer: SocketAddr,
    pub link: SolLink,
}

/// What a SOL packet from the console means for the serial port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleInput {
    pub bytes: Vec<u8>,
    pub send_break: bool,
    /// Sealed datagrams for the console (ACKs, output), all to `peer`.
    pub datagrams: Vec<Vec<u8>>,
    pub peer: SocketAddr,
}

/// Sealed SOL datagrams for the session that owns the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolSend {
    pub datagrams: Vec<Vec<u8>>,
    pub peer: SocketAddr,
}

fn channel_ok(byte: u8) -> bool {
    matches!(byte & 0x0F, 0x0E | super::LAN_CHANNEL)
}

/// Get Channel Payload Support: IPMI and SOL, plus the session-setup payloads.
fn channel_payload_support(request: &IpmiRequest) -> IpmiResponse {
    match request.data.as_slice() {
        [channel] if channel_ok(*channel) => {
            request.response(cc::OK, &[0x03, 0x00, 0x3F, 0x00, 0, 0, 0, 0])
        }
        [_] => request.response(cc::INVALID_DATA, &[]),
        _ => request.response(cc::REQUEST_LENGTH_INVALID, &[]),
    }
}

/// Get Channel Payload Version: format 1.0 for the two payloads served.
fn channel_payload_version(request: &IpmiRequest) -> IpmiResponse {
    const PAYLOAD_NOT_AVAILABLE: u8 = 0x80;
    match request.data.as_slice() {
        [channel, kind] if channel_ok(*channel) && *kind <= v20::payload::SOL => {
            request.response(cc::OK, &[0x10])
        }
        [channel, _] if channel_ok(*channel) => request.response(PAYLOAD_NOT_AVAILABLE, &[]),
        [_, _] => request.response(cc::INVALID_DATA, &[]),
        _ => request.response(cc::REQUEST_LENGTH_INVALID, &[]),
    }
}

impl Server {
    /// Whether the SOL owner's session still exists; forgets it (and says so) if not.
    fn sol_alive(&mut self) -> bool {
        let Some(active) = &self.sol else {
            return false;
        };
        let alive = self
            .table
            .get(active.slot)
            .is_some_and(|s| s.id == active.session_id && s.is_active());
        if !alive {
            let id = active.session_id;
            self.sol = None;
            self.sol_events.push(Event::SolDeactivated { id });
        }
        alive
    }

    /// Whether SOL output waits for an ACK or for its accumulate interval: the caller
    /// should call [`Server::sol_tick`] soon.
    pub fn sol_busy(&self) -> bool {
        self.sol.as_ref().is_some_and(|a| a.link.busy())
    }

    /// The SOL configuration as Set SOL Configuration Parameters left it, for front ends
    /// that report it elsewhere (Redfish `SerialConsole`).
    pub fn sol_config(&self) -> &sol::SolConfig {
        &self.sol_config
    }

    /// Is SOL active (its session still alive)?
    pub fn sol_active(&mut self) -> bool {
        self.sol_alive()
    }

    /// Events the SOL layer produced outside a reply (a session that held SOL went away).
    pub fn take_sol_events(&mut self) -> Vec<Event> {
        self.sol_alive();
        std::mem::take(&mut self.sol_events)
    }

    /// Payload and SOL-configuration commands; None for anything else.
    pub(super) fn payload_command(
        &mut self,
        slot: usize,
        request: &IpmiRequest,
        rng: &mut dyn Random,
    ) -> Option<Outcome> {
        self.sol_alive();
        let mut event = None;
        let mut extra = Vec::new();
        let response = match (request.netfn, request.cmd) {
            (netfn::APP, ACTIVATE_PAYLOAD) => {
                let (r, e) = self.activate_payload(slot, request);
                event = e;
                r
            }
            (netfn::APP, DEACTIVATE_PAYLOAD) => {
                let (r, closing) = self.deactivate_payload(slot, request);
                if let Some((active, own)) = closing {
                    // Another session ended it: the owner hears it on its SOL stream, as
                    // ipmitool expects ("SOL session closed by BMC").
                    if !own
                        && let Some(d) = self.seal_payload(
                            active.slot,
                            v20::payload::SOL,
                            &sol::deactivating(),
                            rng,
                        )
                    {
                        extra.push((d, active.peer));
                    }
                    event = Some(Event::SolDeactivated {
                        id: active.session_id,
                    });
                }
                r
            }
            (netfn::APP, GET_PAYLOAD_ACTIVATION_STATUS) => self.activation_status(request),
            (netfn::APP, GET_CHANNEL_PAYLOAD_SUPPORT) => channel_payload_support(request),
            (netfn::APP, GET_CHANNEL_PAYLOAD_VERSION) => channel_payload_version(request),
            (netfn::TRANSPORT, sol::GET_SOL_CONFIG) => sol::get_config(&self.sol_config, request),
            (netfn::TRANSPORT, sol::SET_SOL_CONFIG) => self.set_sol_config(slot, request),
            _ => return None,
        };
        let sealed = self.seal(slot, &response, rng)?;
        let peer = self.table.get(slot)?.peer;
        let mut datagrams = vec![sealed];
        let mut others = Vec::new();
        for (d, to) in extra {
            if to == peer {
                datagrams.push(d);
            } else {
                others.push((d, to));
            }
        }
        self.sol_elsewhere.extend(others);
        Some(Outcome::Reply(Reply {
            datagrams,
            delay: Duration::ZERO,
            event,
        }))
    }

    /// Datagrams for other peers produced while answering (the deactivation notice to the
    /// SOL owner when another session deactivates it).
    pub fn take_elsewhere(&mut self) -> Vec<(Vec<u8>, SocketAddr)> {
        std::mem::take(&mut self.sol_elsewhere)
    }

    fn privilege(&mut self, slot: usize) -> Privilege {
        self.table
            .get_mut(slot)
            .and_then(|s| s.link())
            .map_or(Privilege::Callback, |l| l.privilege)
    }

    fn set_sol_config(&mut self, slot: usize, request: &IpmiRequest) -> IpmiResponse {
        if self.privilege(slot) < Privilege::Administrator {
            return request.response(cc::INSUFFICIENT_PRIVILEGE, &[]);
        }
        sol::set_config(&mut self.sol_config, request)
    }

    fn activate_payload(
        &mut self,
        slot: usize,
        request: &IpmiRequest,
    ) -> (IpmiResponse, Option<Event>) {
        let d = &request.data;
        if d.len() != 6 {
            return (request.response(cc::REQUEST_LENGTH_INVALID, &[]), None);
        }
        if d[0] & 0x3F != v20::payload::SOL || d[1] != SOL_INSTANCE {
            return (request.response(cc::INVALID_DATA, &[]), None);
        }
        if !self.config.console || !self.sol_config.enabled {
            return (request.response(PAYLOAD_DISABLED, &[]), None);
        }
        let wanted = Privilege::from_nibble(self.sol_config.privilege()).unwrap_or(Privilege::User);
        if self.privilege(slot) < wanted {
            return (request.response(cc::INSUFFICIENT_PRIVILEGE, &[]), None);
        }
        let Some(session) = self.table.get(slot) else {
            return (request.response(cc::UNSPECIFIED, &[]), None);
        };
        let State::Active20 { keys, .. } = &session.state else {
            // SOL is an RMCP+ payload; an IPMI 1.5 session cannot carry it.
            return (request.response(PAYLOAD_DISABLED, &[]), None);
        };
        if self.sol_config.authentication & 0x80 != 0 && !keys.encrypts() {
            return (
                request.response(CANNOT_ACTIVATE_WITHOUT_ENCRYPTION, &[]),
                None,
            );
        }
        let (session_id, peer) = (session.id, session.peer);
        match &self.sol {
            // A retransmitted Activate from the owner gets the same answer again.
            Some(active) if active.slot == slot => {}
            Some(_) => return (request.response(ALREADY_ACTIVE, &[]), None),
            None => {
                self.sol = Some(ActiveSol {
                    slot,
                    session_id,
                    peer,
                    link: SolLink::new(),
                })
            }
        }
        let mut out = vec![0u8; 4];
        out.extend_from_slice(&sol::MAX_PAYLOAD.to_le_bytes());
        out.extend_from_slice(&sol::MAX_PAYLOAD.to_le_bytes());
        out.extend_from_slice(&self.sol_config.port.to_le_bytes());
        out.extend_from_slice(&0xFFFFu16.to_le_bytes()); // no VLAN
        (
            request.response(cc::OK, &out),
            Some(Event::SolActivated { id: session_id }),
        )
    }

    fn deactivate_payload(
        &mut self,
        slot: usize,
        request: &IpmiRequest,
    ) -> (IpmiResponse, Option<(ActiveSol, bool)>) {
        let d = &request.data;
        if d.len() != 6 {
            return (request.response(cc::REQUEST_LENGTH_INVALID, &[]), None);
        }
        if d[0] & 0x3F != v20::payload::SOL || d[1] != SOL_INSTANCE {
            return (request.response(cc::INVALID_DATA, &[]), None);
        }
        let Some(active) = &self.sol else {
            return (request.response(ALREADY_DEACTIVATED, &[]), None);
        };
        let own = active.slot == slot;
        if !own && self.privilege(slot) < Privilege::Administrator {
            return (request.response(cc::INSUFFICIENT_PRIVILEGE, &[]), None);
        }
        let active = self.sol.take().expect("checked");
        (request.response(cc::OK, &[]), Some((active, own)))
    }

    fn activation_status(&mut self, request: &IpmiRequest) -> IpmiResponse {
        match request.data.first() {
            None => request.response(cc::REQUEST_LENGTH_INVALID, &[]),
            Some(&t) if t & 0x3F == v20::payload::SOL => {
                let bits = if self.sol.is_some() { 0x01 } else { 0x00 };
                request.response(cc::OK, &[1, bits, 0])
            }
            Some(_) => request.response(cc::OK, &[0, 0, 0]),
        }
    }

    /// A SOL packet inside a session.
    pub(super) fn sol_packet(
        &mut self,
        slot: usize,
        payload: &[u8],
        now: Duration,
        rng: &mut dyn Random,
    ) -> Outcome {
        self.sol_alive();
        let Some(active) = self.sol.as_mut().filter(|a| a.slot == slot) else {
            return Outcome::Drop(Dropped::Ignored("SOL packet without an active SOL payload"));
        };
        let packet = match sol::decode(payload) {
            Ok(p) => p,
            Err(e) => return Outcome::Drop(e.into()),
        };
        let received = active.link.receive(&packet, &self.sol_config, now);
        let peer = active.peer;
        let datagrams = received
            .replies
            .iter()
            .filter_map(|p| self.seal_payload(slot, v20::payload::SOL, p, rng))
            .collect();
        Outcome::Console(ConsoleInput {
            bytes: received.to_console,
            send_break: received.send_break,
            datagrams,
            peer,
        })
    }

    /// Serial-port output for the SOL owner; None when no SOL payload is active (the
    /// characters are lost, as on a serial line nobody listens to).
    pub fn sol_output(
        &mut self,
        bytes: &[u8],
        now: Duration,
        rng: &mut dyn Random,
    ) -> Option<SolSend> {
        if !self.sol_alive() {
            return None;
        }
        let active = self.sol.as_mut()?;
        let packets = active.link.output(bytes, &self.sol_config, now);
        self.seal_sol(packets, rng)
    }

    /// Retransmissions and accumulated output due at `now`.
    pub fn sol_tick(&mut self, now: Duration, rng: &mut dyn Random) -> Option<SolSend> {
        if !self.sol_alive() {
            return None;
        }
        let active = self.sol.as_mut()?;
        let packets = active.link.tick(&self.sol_config, now);
        self.seal_sol(packets, rng)
    }

    fn seal_sol(&mut self, packets: Vec<Vec<u8>>, rng: &mut dyn Random) -> Option<SolSend> {
        let active = self.sol.as_ref()?;
        let (slot, peer) = (active.slot, active.peer);
        let datagrams: Vec<Vec<u8>> = packets
            .iter()
            .filter_map(|p| self.seal_payload(slot, v20::payload::SOL, p, rng))
            .collect();
        Some(SolSend { datagrams, peer })
    }
}
