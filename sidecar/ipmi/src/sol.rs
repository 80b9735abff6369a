//! Serial over LAN (IPMI v2.0 payload type 1): the SOL configuration parameters and the
//! per-session packet state machine (sequence numbers, ACK/NACK, retransmission, character
//! accumulation, break). Time comes from the caller.

use std::time::Duration;

use crate::message::{IpmiRequest, IpmiResponse, cc};

/// Operation bits a console sets in its packets (byte 3).
mod console_op {
    pub const NACK: u8 = 0x40;
    pub const BREAK: u8 = 0x10;
}

/// Status bits the BMC sets in its packets (byte 3).
mod bmc_status {
    pub const DEACTIVATING: u8 = 0x10;
}

const HEADER: usize = 4;
/// The largest SOL payload either side sends (header included); what Activate Payload
/// advertises.
pub const MAX_PAYLOAD: u16 = 255;
/// Characters per packet: the accepted-character count in an ACK is one byte, so a packet
/// must never carry more than 255 (ipmitool's ACK of 256 would read as 0 accepted).
const MAX_DATA: usize = MAX_PAYLOAD as usize - HEADER;
/// What the BMC holds while the console has not acknowledged; beyond, oldest bytes go.
const BUFFER_LIMIT: usize = 64 * 1024;

/// The SOL configuration parameters (IPMI v2.0 table 26-5) this BMC keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolConfig {
    pub set_in_progress: u8,
    pub enabled: bool,
    /// Bit 7 force encryption, bit 6 force authentication, bits 3:0 privilege.
    pub authentication: u8,
    /// Character accumulate interval (5 ms units) and send threshold (characters).
    pub accumulate: [u8; 2],
    /// Retry count (bits 2:0) and retry interval (10 ms units).
    pub retry: [u8; 2],
    pub bit_rate_nonvolatile: u8,
    pub bit_rate_volatile: u8,
    /// The UDP port SOL rides on: the one the session already uses.
    pub port: u16,
}

impl SolConfig {
    pub fn new(port: u16) -> Self {
        SolConfig {
            set_in_progress: 0,
            enabled: true,
            authentication: 0x02, // User privilege, encryption as the cipher suite says
            // 5 ms: a VM console is local, keystroke echo should feel immediate.
            accumulate: [0x01, 0x60],
            retry: [0x07, 0x0A],
            bit_rate_nonvolatile: 0x0A, // 115.2 kbit/s
            bit_rate_volatile: 0x0A,
            port,
        }
    }

    pub fn retry_interval(&self) -> Duration {
        Duration::from_millis(10 * u64::from(self.retry[1].max(1)))
    }

    pub fn retry_count(&self) -> u8 {
        self.retry[0] & 0x07
    }

    /// The minimal requested privilege nibble for activation.
    pub fn privilege(&self) -> u8 {
        self.authentication & 0x0F
    }
}

pub const SET_SOL_CONFIG: u8 = 0x21;
pub const GET_SOL_CONFIG: u8 = 0x22;
const PARAM_REVISION: u8 = 0x11;
const PARAM_NOT_SUPPORTED: u8 = 0x80;
const SET_IN_PROGRESS_FAILED: u8 = 0x81;
const READ_ONLY: u8 = 0x82;
/// The serial channel SOL is tied to is the LAN channel itself.
const PAYLOAD_CHANNEL: u8 = crate::session::LAN_CHANNEL;

fn channel_ok(byte: u8) -> bool {
    matches!(byte & 0x0F, 0x0E | PAYLOAD_CHANNEL)
}

fn bit_rate_ok(rate: u8) -> bool {
    // 0 means "use the non-volatile rate" for the volatile parameter.
    matches!(rate & 0x0F, 0 | 6..=10)
}

/// Get SOL Configuration Parameters (Transport 0x22).
pub fn get_config(config: &SolConfig, request: &IpmiRequest) -> IpmiResponse {
    let d = &request.data;
    if d.len() != 4 {
        return request.response(cc::REQUEST_LENGTH_INVALID, &[]);
    }
    if !channel_ok(d[0]) {
        return request.response(cc::INVALID_DATA, &[]);
    }
    if d[0] & 0x80 != 0 {
        return request.response(cc::OK, &[PARAM_REVISION]);
    }
    let mut out = vec![PARAM_REVISION];
    match d[1] {
        0 => out.push(config.set_in_progress),
        1 => out.push(config.enabled as u8),
        2 => out.push(config.authentication),
        3 => out.extend_from_slice(&config.accumulate),
        4 => out.extend_from_slice(&config.retry),
        5 => out.push(config.bit_rate_nonvolatile),
        6 => out.push(config.bit_rate_volatile),
        7 => out.push(PAYLOAD_CHANNEL),
        8 => out.extend_from_slice(&config.port.to_le_bytes()),
        _ => return request.response(PARAM_NOT_SUPPORTED, &[]),
    }
    request.response(cc::OK, &out)
}

/// Set SOL Configuration Parameters (Transport 0x21). Bad input changes nothing.
pub fn set_config(config: &mut SolConfig, request: &IpmiRequest) -> IpmiResponse {
    let d = &request.data;
    if d.len() < 3 {
        return request.response(cc::REQUEST_LENGTH_INVALID, &[]);
    }
    if !channel_ok(d[0]) {
        return request.response(cc::INVALID_DATA, &[]);
    }
    let value = &d[2..];
    let want = |n: usize| value.len() == n;
    let mut next = config.clone();
    match d[1] {
        0 if want(1) => match value[0] & 0x03 {
            0 | 2 => next.set_in_progress = 0,
            1 if config.set_in_progress == 1 => {
                return request.response(SET_IN_PROGRESS_FAILED, &[]);
            }
            1 => next.set_in_progress = 1,
            _ => return request.response(cc::INVALID_DATA, &[]),
        },
        1 if want(1) => next.enabled = value[0] & 0x01 != 0,
        2 if want(1) => {
            let privilege = value[0] & 0x0F;
            if !(2..=4).contains(&privilege) || value[0] & 0x30 != 0 {
                return request.response(cc::INVALID_DATA, &[]);
            }
            next.authentication = value[0];
        }
        3 if want(2) => {
            if value[0] == 0 {
                return request.response(cc::INVALID_DATA, &[]);
            }
            next.accumulate = [value[0], value[1]];
        }
        4 if want(2) => next.retry = [value[0] & 0x07, value[1]],
        5 if want(1) && bit_rate_ok(value[0]) && value[0] & 0x0F != 0 => {
            next.bit_rate_nonvolatile = value[0] & 0x0F
        }
        6 if want(1) && bit_rate_ok(value[0]) => next.bit_rate_volatile = value[0] & 0x0F,
        5 | 6 if want(1) => return request.response(cc::INVALID_DATA, &[]),
        7 | 8 => return request.response(READ_ONLY, &[]),
        0..=8 => return request.response(cc::REQUEST_LENGTH_INVALID, &[]),
        _ => return request.response(PARAM_NOT_SUPPORTED, &[]),
    }
    *config = next;
    request.response(cc::OK, &[])
}

/// A decoded packet from the remote console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound<'a> {
    pub seq: u8,
    pub ack_seq: u8,
    pub accepted: u8,
    pub op: u8,
    pub data: &'a [u8],
}

pub fn decode(payload: &[u8]) -> Result<Inbound<'_>, crate::CodecError> {
    if payload.len() < HEADER {
        return Err(crate::CodecError::Truncated {
            what: "SOL packet header",
        });
    }
    Ok(Inbound {
        seq: payload[0] & 0x0F,
        ack_seq: payload[1] & 0x0F,
        accepted: payload[2],
        op: payload[3],
        data: &payload[HEADER..],
    })
}

/// What a received console packet asks of the BMC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// Characters for the serial port (empty for an ACK or a retransmission).
    pub to_console: Vec<u8>,
    pub send_break: bool,
    /// SOL payloads to send back (an ACK, the next chunk of output).
    pub replies: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
struct Outstanding {
    seq: u8,
    data: Vec<u8>,
    sent_at: Duration,
    retries: u8,
}

/// One active SOL payload instance.
#[derive(Debug, Clone)]
pub struct SolLink {
    next_seq: u8,
    last_inbound: Option<u8>,
    outstanding: Option<Outstanding>,
    pending: Vec<u8>,
    /// When the oldest pending character arrived (for the accumulate interval).
    pending_since: Option<Duration>,
    /// Characters lost because the console did not keep up.
    pub dropped: u64,
}

impl Default for SolLink {
    fn default() -> Self {
        Self::new()
    }
}

fn packet(seq: u8, ack_seq: u8, accepted: u8, status: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + data.len());
    out.extend_from_slice(&[seq, ack_seq, accepted, status]);
    out.extend_from_slice(data);
    out
}

/// The packet that tells the console the BMC ends the SOL payload.
pub fn deactivating() -> Vec<u8> {
    packet(0, 0, 0, bmc_status::DEACTIVATING, &[])
}

impl SolLink {
    pub fn new() -> Self {
        SolLink {
            next_seq: 1,
            last_inbound: None,
            outstanding: None,
            pending: Vec::new(),
            pending_since: None,
            dropped: 0,
        }
    }

    fn take_seq(&mut self) -> u8 {
        let seq = self.next_seq;
        // Sequence numbers run 1..=15; 0 marks an ACK-only packet.
        self.next_seq = if seq >= 15 { 1 } else { seq + 1 };
        seq
    }

    /// A packet from the console: data is acknowledged (once delivered, a retransmission
    /// is acknowledged again but not delivered twice), ACKs free the next chunk.
    pub fn receive(&mut self, p: &Inbound<'_>, config: &SolConfig, now: Duration) -> Received {
        let mut out = Received::default();
        if p.ack_seq != 0
            && let Some(o) = &self.outstanding
            && o.seq == p.ack_seq
        {
            let o = self.outstanding.take().expect("checked");
            if p.op & console_op::NACK != 0 {
                // Not accepted: hold it until the console asks again (it resumes by ACKing).
                let mut rest = o.data;
                rest.extend_from_slice(&self.pending);
                self.pending = rest;
                self.pending_since.get_or_insert(now);
            } else {
                let accepted = (p.accepted as usize).min(o.data.len());
                if accepted < o.data.len() {
                    let mut rest = o.data[accepted..].to_vec();
                    rest.extend_from_slice(&self.pending);
                    self.pending = rest;
                    self.pending_since.get_or_insert(now);
                }
            }
        }
        if p.seq != 0 {
            let fresh = self.last_inbound != Some(p.seq);
            if fresh {
                self.last_inbound = Some(p.seq);
                out.to_console = p.data.to_vec();
                out.send_break = p.op & console_op::BREAK != 0;
            }
            out.replies
                .push(packet(0, p.seq, p.data.len().min(255) as u8, 0, &[]));
        }
        if p.op & console_op::NACK == 0 {
            out.replies.extend(self.flush(config, now, true));
        }
        out
    }

    /// Output from the serial port; sent at once when nothing is outstanding and the
    /// send threshold is reached, else accumulated.
    pub fn output(&mut self, bytes: &[u8], config: &SolConfig, now: Duration) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() > BUFFER_LIMIT {
            let excess = self.pending.len() - BUFFER_LIMIT;
            self.pending.drain(..excess);
            self.dropped += excess as u64;
        }
        self.pending_since.get_or_insert(now);
        self.flush(config, now, false)
    }

    /// Retransmits an unacknowledged packet after the retry interval (giving up after the
    /// retry count) and sends characters whose accumulate interval has passed.
    pub fn tick(&mut self, config: &SolConfig, now: Duration) -> Vec<Vec<u8>> {
        if let Some(o) = &mut self.outstanding {
            if now.saturating_sub(o.sent_at) < config.retry_interval() {
                return Vec::new();
            }
            if o.retries < config.retry_count() {
                o.retries += 1;
                o.sent_at = now;
                return vec![packet(o.seq, 0, 0, 0, &o.data)];
            }
            self.dropped += o.data.len() as u64;
            self.outstanding = None;
        }
        self.flush(config, now, false)
    }

    /// Whether the loop should call [`SolLink::tick`] soon.
    pub fn busy(&self) -> bool {
        self.outstanding.is_some() || !self.pending.is_empty()
    }

    fn flush(&mut self, config: &SolConfig, now: Duration, force: bool) -> Vec<Vec<u8>> {
        if self.outstanding.is_some() || self.pending.is_empty() {
            return Vec::new();
        }
        let threshold = usize::from(config.accumulate[1].max(1));
        let interval = Duration::from_millis(5 * u64::from(config.accumulate[0]));
        let waited = self
            .pending_since
            .is_some_and(|since| now.saturating_sub(since) >= interval);
        if !(force || waited || self.pending.len() >= threshold) {
            return Vec::new();
        }
        let n = self.pending.len().min(MAX_DATA);
        let data: Vec<u8> = self.pending.drain(..n).collect();
        self.pending_since = if self.pending.is_empty() {
            None
        } else {
            Some(now)
        };
        let seq = self.take_seq();
        let datagram = packet(seq, 0, 0, 0, &data);
        self.outstanding = Some(Outstanding {
            seq,
            data,
            sent_at: now,
            retries: 0,
        });
        vec![datagram]
    }
}

#[cfg(test)]
mod tests;
