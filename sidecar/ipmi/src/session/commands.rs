//! The App commands that belong to the session layer: authentication capabilities, cipher
//! suites, session privilege, Close Session and Get Session Info.

use std::net::IpAddr;

use super::table::{State, handle_of, six_bit_count, slot_of};
use super::{Event, Outcome, Random, Reply, Server};
use crate::crypto::SUPPORTED_SUITES;
use crate::message::{IpmiRequest, IpmiResponse, cc, netfn};
use crate::privilege::Privilege;

pub const GET_CHANNEL_AUTH_CAPS: u8 = 0x38;
pub const GET_SESSION_CHALLENGE: u8 = 0x39;
const ACTIVATE_SESSION: u8 = 0x3A;
const SET_SESSION_PRIVILEGE: u8 = 0x3B;
const CLOSE_SESSION: u8 = 0x3C;
const GET_SESSION_INFO: u8 = 0x3D;
pub const GET_CHANNEL_CIPHER_SUITES: u8 = 0x54;

/// The LAN channel this BMC serves.
pub const LAN_CHANNEL: u8 = 1;
const CURRENT_CHANNEL: u8 = 0x0E;

fn channel_ok(byte: u8) -> bool {
    matches!(byte & 0x0F, CURRENT_CHANNEL | LAN_CHANNEL)
}

/// Get Channel Cipher Suites: suites 17, 3, 2 and 1 (never 0), 16 bytes per call; without
/// `legacy` only 17 and 3 (1 and 2 lack confidentiality, 1 integrity too).
pub fn channel_cipher_suites(request: &IpmiRequest, legacy: bool) -> IpmiResponse {
    let data = &request.data;
    if data.len() != 3 {
        return request.response(cc::REQUEST_LENGTH_INVALID, &[]);
    }
    if !channel_ok(data[0]) || data[1] > 1 {
        return request.response(cc::INVALID_DATA, &[]);
    }
    let mut records = Vec::new();
    if data[2] & 0x80 != 0 {
        for s in SUPPORTED_SUITES
            .iter()
            .filter(|s| legacy || super::strong_suite(s.id))
        {
            records.extend_from_slice(&[
                0xC0,
                s.id,
                s.auth as u8,
                0x40 | s.integrity as u8,
                0x80 | s.confidentiality as u8,
            ]);
        }
    } else {
        // Algorithms supported, each tagged with its kind.
        if legacy {
            records.extend_from_slice(&[0x01, 0x03, 0x40, 0x41, 0x44, 0x80, 0x81]);
        } else {
            records.extend_from_slice(&[0x01, 0x03, 0x41, 0x44, 0x81]);
        }
    }
    let start = (data[2] & 0x3F) as usize * 16;
    let mut out = vec![LAN_CHANNEL];
    if start < records.len() {
        out.extend_from_slice(&records[start..records.len().min(start + 16)]);
    }
    request.response(cc::OK, &out)
}

impl Server {
    pub(super) fn channel_auth_caps(&self, request: &IpmiRequest) -> IpmiResponse {
        let data = &request.data;
        if data.len() != 2 {
            return request.response(cc::REQUEST_LENGTH_INVALID, &[]);
        }
        if !channel_ok(data[0]) || Privilege::from_nibble(data[1]).is_none() {
            return request.response(cc::INVALID_DATA, &[]);
        }
        let extended = data[0] & 0x80 != 0;
        // MD5 and straight password (IPMI v1.5, only when legacy logins are on); never NONE.
        let mut auth_types = if self.config.legacy { 0x04 | 0x10 } else { 0 };
        if extended {
            auth_types |= 0x80;
        }
        // Non-null user names only; per-message and user-level authentication enabled.
        let mut status = 0x04;
        if self.config.kg.is_some() {
            status |= 0x20;
        }
        // Bit 1: IPMI v2.0 (RMCP+) connections, bit 0: IPMI v1.5.
        let versions = match (extended, self.config.legacy) {
            (false, _) => 0x00,
            (true, true) => 0x03,
            (true, false) => 0x02,
        };
        request.response(
            cc::OK,
            &[LAN_CHANNEL, auth_types, status, versions, 0, 0, 0, 0],
        )
    }

    /// Answers a session-layer command inside a session; None for application commands.
    pub(super) fn session_command(
        &mut self,
        slot: usize,
        request: &IpmiRequest,
        rng: &mut dyn Random,
    ) -> Option<Outcome> {
        if request.netfn != netfn::APP {
            return None;
        }
        let mut event = None;
        let response = match request.cmd {
            GET_CHANNEL_AUTH_CAPS => self.channel_auth_caps(request),
            GET_CHANNEL_CIPHER_SUITES => channel_cipher_suites(request, self.config.legacy),
            GET_SESSION_CHALLENGE | ACTIVATE_SESSION => {
                request.response(cc::NOT_IN_PRESENT_STATE, &[])
            }
            SET_SESSION_PRIVILEGE => self.set_privilege(slot, request),
            GET_SESSION_INFO => self.session_info(slot, request),
            CLOSE_SESSION => {
                let (response, closed) = self.close_session(slot, request);
                // Seal with the session's keys before the session (and its keys) go.
                let sealed = self.seal(slot, &response, rng);
                if let Some(closed) = closed {
                    self.table.remove(closed.0);
                    event = Some(Event::SessionClosed { id: closed.1 });
                }
                return Some(match sealed {
                    Some(datagram) => Outcome::Reply(Reply {
                        datagrams: vec![datagram],
                        delay: std::time::Duration::ZERO,
                        event,
                    }),
                    None => Outcome::Drop(super::Dropped::UnknownSession),
                });
            }
            _ => return None,
        };
        Some(match self.seal(slot, &response, rng) {
            Some(d) => Outcome::Reply(Reply {
                datagrams: vec![d],
                delay: std::time::Duration::ZERO,
                event,
            }),
            None => Outcome::Drop(super::Dropped::UnknownSession),
        })
    }

    fn set_privilege(&mut self, slot: usize, request: &IpmiRequest) -> IpmiResponse {
        let Some(link) = self.table.get_mut(slot).and_then(|s| s.link()) else {
            return request.response(cc::UNSPECIFIED, &[]);
        };
        let Some(&wanted) = request.data.first() else {
            return request.response(cc::REQUEST_LENGTH_INVALID, &[]);
        };
        if wanted & 0x0F == 0 {
            return request.response(cc::OK, &[link.privilege.code()]);
        }
        match Privilege::from_nibble(wanted) {
            Some(Privilege::Callback) => request.response(0x80, &[]),
            Some(p) if p <= link.max_privilege => {
                link.privilege = p;
                request.response(cc::OK, &[p.code()])
            }
            _ => request.response(0x81, &[]),
        }
    }

    /// Returns the response and, when a session is to be closed, its slot and ID.
    fn close_session(
        &mut self,
        slot: usize,
        request: &IpmiRequest,
    ) -> (IpmiResponse, Option<(usize, u32)>) {
        let data = &request.data;
        if data.len() < 4 {
            return (request.response(cc::REQUEST_LENGTH_INVALID, &[]), None);
        }
        let id = u32::from_le_bytes(data[..4].try_into().expect("4 bytes"));
        let own = self.table.get(slot).map(|s| s.id);
        let target = if id == 0 {
            match data.get(4) {
                Some(&handle) if handle >= 1 => slot_of(handle).and_then(|t| {
                    self.table
                        .get(t)
                        .filter(|s| s.is_active())
                        .map(|s| (t, s.id))
                }),
                _ => return (request.response(0x88, &[]), None),
            }
        } else {
            self.table
                .find(id)
                .filter(|&t| self.table.get(t).is_some_and(|s| s.is_active()))
                .map(|t| (t, id))
        };
        let Some(target) = target else {
            return (request.response(0x87, &[]), None);
        };
        let privilege = self
            .table
            .get_mut(slot)
            .and_then(|s| s.link())
            .map_or(Privilege::Callback, |l| l.privilege);
        if Some(target.1) != own && privilege < Privilege::Administrator {
            return (request.response(cc::INSUFFICIENT_PRIVILEGE, &[]), None);
        }
        (request.response(cc::OK, &[]), Some(target))
    }

    fn session_info(&mut self, slot: usize, request: &IpmiRequest) -> IpmiResponse {
        let data = &request.data;
        let Some(&index) = data.first() else {
            return request.response(cc::REQUEST_LENGTH_INVALID, &[]);
        };
        let active: Vec<usize> = self
            .table
            .iter()
            .filter(|(_, s)| s.is_active())
            .map(|(i, _)| i)
            .collect();
        let target = match index {
            0 => Some(slot),
            // Handles reach the first 255 slots only (see `table::HANDLED_SLOTS`).
            0xFE => match data.get(1).and_then(|&h| slot_of(h)) {
                Some(t) => Some(t),
                None => return request.response(cc::REQUEST_LENGTH_INVALID, &[]),
            },
            0xFF => match data.get(1..5) {
                Some(b) => self
                    .table
                    .find(u32::from_le_bytes(b.try_into().expect("4 bytes"))),
                None => return request.response(cc::REQUEST_LENGTH_INVALID, &[]),
            },
            n => active.get(n as usize - 1).copied(),
        };
        let mut out = vec![
            0,
            six_bit_count(self.table.capacity()),
            six_bit_count(active.len()),
        ];
        let Some(session) = target
            .and_then(|t| self.table.get(t))
            .filter(|s| s.is_active())
        else {
            return request.response(cc::OK, &out);
        };
        // A session past the 255th slot is real but has no handle to report: 0.
        out[0] = handle_of(target.expect("checked"));
        let (privilege, protocol) = match &session.state {
            State::Active20 { link, .. } => (link.privilege, 1u8),
            State::Active15 { link, .. } => (link.privilege, 0u8),
            _ => unreachable!("active"),
        };
        out.push(2); // user ID of the one user (ID 1 is the null user)
        out.push(privilege.code());
        out.push(protocol << 4 | LAN_CHANNEL);
        match session.peer.ip() {
            IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
            IpAddr::V6(_) => out.extend_from_slice(&[0; 4]),
        }
        out.extend_from_slice(&[0; 6]); // the console's MAC is not known over UDP
        out.extend_from_slice(&session.peer.port().to_le_bytes());
        request.response(cc::OK, &out)
    }
}
