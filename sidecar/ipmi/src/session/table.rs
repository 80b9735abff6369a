//! The bounded session table, the inbound sequence window and the per-source record of
//! failed logins.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::crypto::SessionKeys;
use crate::privilege::Privilege;
use crate::rakp::Exchange;

/// Inbound sequence numbers accepted: up to this far ahead of the highest seen, and not yet
/// seen among this many behind it.
const WINDOW: u32 = 32;

/// A sliding window over inbound session sequence numbers: replays and packets far out of
/// order are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    highest: u32,
    /// Bit i set: `highest - i` was seen.
    seen: u64,
}

impl Window {
    /// A window expecting `first` as the first sequence number.
    pub fn starting_at(first: u32) -> Self {
        Window {
            highest: first.wrapping_sub(1),
            seen: 1,
        }
    }

    /// Accepts and records `seq` when it is new and in the window.
    pub fn accept(&mut self, seq: u32) -> bool {
        let ahead = seq.wrapping_sub(self.highest);
        if ahead != 0 && ahead <= WINDOW {
            self.seen = if ahead >= 64 { 0 } else { self.seen << ahead };
            self.seen |= 1;
            self.highest = seq;
            return true;
        }
        let behind = self.highest.wrapping_sub(seq);
        if behind < WINDOW && self.seen & (1u64 << behind) == 0 {
            self.seen |= 1u64 << behind;
            return true;
        }
        false
    }
}

#[derive(Debug)]
pub enum State {
    /// RMCP+: Open Session answered, waiting for RAKP 1.
    Opened {
        console_id: u32,
        suite: crate::crypto::CipherSuite,
        max_privilege: Privilege,
    },
    /// RMCP+: RAKP 2 sent, waiting for RAKP 3.
    Rakp2Sent {
        exchange: Box<Exchange>,
        max_privilege: Privilege,
    },
    /// An established RMCP+ session.
    Active20 {
        console_id: u32,
        keys: Box<SessionKeys>,
        link: Link,
    },
    /// An established IPMI 1.5 session.
    Active15 { auth_type: u8, link: Link },
}

/// What an established session of either version carries.
#[derive(Debug)]
pub struct Link {
    pub privilege: Privilege,
    pub max_privilege: Privilege,
    pub inbound: Window,
    pub outbound_seq: u32,
    /// The last command handed to the application layer (its raw IPMI message)...
    pub awaiting: Option<Vec<u8>>,
    /// ...and, once answered, its response: a retransmission (same message, new session
    /// sequence number, as ipmitool retries) gets this again instead of running twice.
    pub last: Option<(Vec<u8>, crate::message::IpmiResponse)>,
}

impl Link {
    pub fn new(max_privilege: Privilege, inbound: Window, outbound_seq: u32) -> Self {
        Link {
            privilege: max_privilege.min(Privilege::User),
            max_privilege,
            inbound,
            outbound_seq,
            awaiting: None,
            last: None,
        }
    }

    /// The next outbound sequence number (never 0, which means "outside a session").
    pub fn next_outbound(&mut self) -> u32 {
        let seq = self.outbound_seq;
        self.outbound_seq = self.outbound_seq.wrapping_add(1).max(1);
        seq
    }
}

#[derive(Debug)]
pub struct Session {
    /// Our (the managed system's) session ID; what inbound packets carry.
    pub id: u32,
    pub peer: SocketAddr,
    pub last_seen: Duration,
    pub state: State,
}

impl Session {
    pub fn is_active(&self) -> bool {
        matches!(self.state, State::Active20 { .. } | State::Active15 { .. })
    }

    /// IPMI v1.5, or RMCP+ with a suite lacking integrity or confidentiality (or a login
    /// under way with one): what only legacy logins allow.
    pub fn is_legacy(&self) -> bool {
        match &self.state {
            State::Opened { suite, .. } => !super::strong_suite(suite.id),
            State::Rakp2Sent { exchange, .. } => !super::strong_suite(exchange.suite.id),
            State::Active20 { keys, .. } => !super::strong_suite(keys.suite.id),
            State::Active15 { .. } => true,
        }
    }

    pub fn link(&mut self) -> Option<&mut Link> {
        match &mut self.state {
            State::Active20 { link, .. } | State::Active15 { link, .. } => Some(link),
            _ => None,
        }
    }
}

/// Slots that have a session handle: handles are 8 bits and 0 means "no session", so a
/// table of more than 255 slots (the load command runs 1024) leaves the rest without one.
pub const HANDLED_SLOTS: usize = 255;

/// Get Session Info reports the table's size and use in 6-bit fields.
const SIX_BITS: usize = 0x3F;

/// The session handle of a slot: its index + 1, or 0 past [`HANDLED_SLOTS`].
pub fn handle_of(slot: usize) -> u8 {
    if slot < HANDLED_SLOTS {
        slot as u8 + 1
    } else {
        0
    }
}

/// The slot a session handle names; handle 0 names none.
pub fn slot_of(handle: u8) -> Option<usize> {
    (handle != 0).then(|| handle as usize - 1)
}

/// A count as Get Session Info's 6-bit fields can carry it: saturated at 63 rather than
/// wrapped (a table of 64 must not read as a table of 0).
pub fn six_bit_count(n: usize) -> u8 {
    n.min(SIX_BITS) as u8
}

/// A fixed number of slots; a slot's handle is [`handle_of`] its index.
#[derive(Debug)]
pub struct Table {
    slots: Vec<Option<Session>>,
}

impl Table {
    pub fn new(capacity: usize) -> Self {
        Table {
            slots: (0..capacity.max(1)).map(|_| None).collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn find(&self, id: u32) -> Option<usize> {
        if id == 0 {
            return None;
        }
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.id == id))
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Session> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    pub fn get(&self, slot: usize) -> Option<&Session> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    pub fn remove(&mut self, slot: usize) -> Option<Session> {
        self.slots.get_mut(slot).and_then(Option::take)
    }

    pub fn active_count(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|s| s.is_active())
            .count()
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &Session)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    /// Places a session in a free slot, or in place of the oldest one still being set up
    /// (so unauthenticated Open Sessions cannot crowd out established ones). None when
    /// every slot holds an established session.
    pub fn insert(&mut self, session: Session) -> Option<usize> {
        let slot = self.slots.iter().position(Option::is_none).or_else(|| {
            self.slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().filter(|s| !s.is_active()).map(|s| (i, s)))
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(i, _)| i)
        })?;
        self.slots[slot] = Some(session);
        Some(slot)
    }

    /// Frees sessions idle for longer than their timeout; returns the IDs freed.
    /// Frees every session `unwanted` picks; their IDs.
    pub fn remove_where(&mut self, unwanted: impl Fn(&Session) -> bool) -> Vec<u32> {
        let mut freed = Vec::new();
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(&unwanted) {
                freed.extend(slot.take().map(|s| s.id));
            }
        }
        freed
    }

    pub fn expire(&mut self, now: Duration, idle: Duration, setup: Duration) -> Vec<u32> {
        let mut freed = Vec::new();
        for slot in &mut self.slots {
            if let Some(s) = slot {
                let limit = if s.is_active() { idle } else { setup };
                if now.saturating_sub(s.last_seen) > limit {
                    freed.push(s.id);
                    *slot = None;
                }
            }
        }
        freed
    }
}

const FAILURE_SOURCES: usize = 64;
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
const FREE_FAILURES: u32 = 3;
const MAX_DELAY: Duration = Duration::from_secs(4);

/// Failed logins per source address, to slow down password guessing.
#[derive(Debug, Default)]
pub struct Failures {
    entries: Vec<(IpAddr, u32, Duration)>,
}

impl Failures {
    pub fn record(&mut self, ip: IpAddr, now: Duration) {
        self.forget_old(now);
        if let Some(e) = self.entries.iter_mut().find(|e| e.0 == ip) {
            e.1 += 1;
            e.2 = now;
            return;
        }
        if self.entries.len() >= FAILURE_SOURCES {
            // Forget the source that failed longest ago.
            if let Some(oldest) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].2) {
                self.entries.swap_remove(oldest);
            }
        }
        self.entries.push((ip, 1, now));
    }

    pub fn clear(&mut self, ip: IpAddr) {
        self.entries.retain(|e| e.0 != ip);
    }

    /// How long to hold back login replies to `ip`: nothing for the first few failures,
    /// then doubling up to a few seconds.
    pub fn delay(&self, ip: IpAddr, now: Duration) -> Duration {
        match self.entries.iter().find(|e| e.0 == ip) {
            Some(&(_, count, last)) if count > FREE_FAILURES && now - last < FAILURE_MEMORY => {
                let doublings = (count - FREE_FAILURES - 1).min(8);
                (Duration::from_millis(250) * (1 << doublings)).min(MAX_DELAY)
            }
            _ => Duration::ZERO,
        }
    }

    fn forget_old(&mut self, now: Duration) {
        self.entries
            .retain(|e| now.saturating_sub(e.2) < FAILURE_MEMORY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_refuses_replays_and_far_packets() {
        let mut w = Window::starting_at(1);
        assert!(w.accept(1));
        assert!(!w.accept(1), "replay");
        assert!(w.accept(3));
        assert!(w.accept(2), "late but unseen");
        assert!(!w.accept(2), "late replay");
        assert!(!w.accept(3 + WINDOW + 1), "too far ahead");
        assert!(w.accept(3 + WINDOW));
        assert!(!w.accept(3), "fell out of the window");
        assert!(!w.accept(0u32.wrapping_sub(5)), "far behind");
    }

    #[test]
    fn window_wraps_around() {
        let mut w = Window::starting_at(u32::MAX - 1);
        assert!(w.accept(u32::MAX - 1));
        assert!(w.accept(u32::MAX));
        assert!(w.accept(1));
        assert!(!w.accept(u32::MAX));
    }

    #[test]
    fn failures_slow_down_after_a_few() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut f = Failures::default();
        let t = Duration::from_secs(100);
        for _ in 0..3 {
            f.record(ip, t);
        }
        assert_eq!(f.delay(ip, t), Duration::ZERO);
        f.record(ip, t);
        assert_eq!(f.delay(ip, t), Duration::from_millis(250));
        for _ in 0..20 {
            f.record(ip, t);
        }
        assert_eq!(f.delay(ip, t), MAX_DELAY);
        assert_eq!(f.delay(ip, t + FAILURE_MEMORY), Duration::ZERO);
        f.clear(ip);
        assert_eq!(f.delay(ip, t), Duration::ZERO);
    }

    #[test]
    fn handles_cover_the_first_255_slots_only() {
        assert_eq!(handle_of(0), 1);
        assert_eq!(handle_of(254), 255);
        assert_eq!(handle_of(255), 0, "no 8-bit handle left");
        assert_eq!(handle_of(1023), 0);
        assert_eq!(slot_of(0), None);
        assert_eq!(slot_of(1), Some(0));
        assert_eq!(slot_of(255), Some(254));
        for slot in 0..HANDLED_SLOTS {
            assert_eq!(slot_of(handle_of(slot)), Some(slot));
        }
    }

    #[test]
    fn six_bit_counts_saturate_instead_of_wrapping() {
        assert_eq!(six_bit_count(0), 0);
        assert_eq!(six_bit_count(32), 32);
        assert_eq!(six_bit_count(63), 63);
        assert_eq!(six_bit_count(64), 63, "64 & 0x3F would read 0");
        assert_eq!(six_bit_count(1024), 63);
    }

    #[test]
    fn full_table_recycles_half_open_sessions_only() {
        let peer: SocketAddr = "10.0.0.1:623".parse().unwrap();
        let mut t = Table::new(2);
        let opened = |id, at| Session {
            id,
            peer,
            last_seen: Duration::from_secs(at),
            state: State::Opened {
                console_id: 1,
                suite: crate::crypto::CipherSuite::by_id(3).unwrap(),
                max_privilege: Privilege::Administrator,
            },
        };
        let active = |id| Session {
            id,
            peer,
            last_seen: Duration::ZERO,
            state: State::Active15 {
                auth_type: 2,
                link: Link::new(Privilege::User, Window::starting_at(1), 1),
            },
        };
        assert_eq!(t.insert(active(1)), Some(0));
        assert_eq!(t.insert(opened(2, 5)), Some(1));
        assert_eq!(t.insert(opened(3, 6)), Some(1), "half-open recycled");
        t.remove(1);
        assert_eq!(t.insert(active(4)), Some(1));
        assert_eq!(
            t.insert(opened(5, 7)),
            None,
            "established sessions are kept"
        );
        assert_eq!(
            t.expire(
                Duration::from_secs(100),
                Duration::from_secs(60),
                Duration::from_secs(10)
            ),
            vec![1, 4]
        );
    }
}
