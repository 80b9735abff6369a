//! A small RMCP+ client (the RAKP initiator): used by the protocol tests, the fuzz targets
//! and the benchmark. It speaks cipher suites 1, 2, 3 and 17.

use crate::crypto::{CipherSuite, SessionKeys};
use crate::error::CodecError;
use crate::message::{IpmiRequest, IpmiResponse};
use crate::privilege::Privilege;
use crate::rakp::{
    Exchange, NAME_ONLY_LOOKUP, OpenSessionRequest, OpenSessionResponse, Rakp1, RakpReply, status,
    user_key,
};
use crate::session::Random;
use crate::{rmcp, v20};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("the BMC answered with RMCP+ status {0:#04x}")]
    Status(u8),
    #[error("protocol: {0}")]
    Protocol(&'static str),
}

enum Stage {
    Start,
    Rakp1Sent { bmc_id: u32, rakp1: Rakp1 },
    Rakp3Sent { exchange: Box<Exchange> },
    Active { bmc_id: u32, keys: Box<SessionKeys> },
}

pub struct Client {
    username: Vec<u8>,
    key: [u8; 20],
    kg: Option<[u8; 20]>,
    suite: CipherSuite,
    privilege: Privilege,
    console_id: u32,
    stage: Stage,
    seq: u32,
    rq_seq: u8,
}

impl Client {
    pub fn new(
        username: &[u8],
        password: &[u8],
        suite: CipherSuite,
        privilege: Privilege,
        console_id: u32,
    ) -> Self {
        Client {
            username: username.to_vec(),
            key: user_key(password),
            kg: None,
            suite,
            privilege,
            console_id,
            stage: Stage::Start,
            seq: 0,
            rq_seq: 0,
        }
    }

    /// Uses a BMC key Kg (ipmitool's `-k`) instead of the user key for the session keys.
    pub fn with_kg(mut self, kg: &[u8]) -> Self {
        self.kg = Some(user_key(kg));
        self
    }

    pub fn is_active(&self) -> bool {
        matches!(self.stage, Stage::Active { .. })
    }

    /// The BMC's ID of the active session: what Close Session names.
    pub fn bmc_session_id(&self) -> Option<u32> {
        match &self.stage {
            Stage::Active { bmc_id, .. } => Some(*bmc_id),
            _ => None,
        }
    }

    pub fn open_session_request(&self) -> Vec<u8> {
        let request = OpenSessionRequest {
            tag: 0,
            max_privilege: self.privilege.code(),
            console_session_id: self.console_id,
            auth: self.suite.auth as u8,
            integrity: self.suite.integrity as u8,
            confidentiality: self.suite.confidentiality as u8,
        };
        v20::encode(
            v20::payload::OPEN_SESSION_REQUEST,
            0,
            0,
            &request.encode(),
            None,
            [0; 16],
        )
    }

    fn payload(datagram: &[u8], expected: u8) -> Result<Vec<u8>, ClientError> {
        let rmcp::Rmcp::Ipmi(body) = rmcp::decode(datagram)? else {
            return Err(ClientError::Protocol("not an IPMI datagram"));
        };
        let packet = v20::decode(body)?;
        if packet.header.payload_type != expected {
            return Err(ClientError::Protocol("unexpected payload type"));
        }
        Ok(packet.plain_payload()?.to_vec())
    }

    /// Takes the Open Session Response; returns RAKP 1.
    pub fn on_open_session_response(
        &mut self,
        datagram: &[u8],
        rng: &mut dyn Random,
    ) -> Result<Vec<u8>, ClientError> {
        let response = OpenSessionResponse::decode(&Self::payload(
            datagram,
            v20::payload::OPEN_SESSION_RESPONSE,
        )?)?;
        let Some((bmc_id, suite)) = response.accepted else {
            return Err(ClientError::Status(response.status));
        };
        if suite != self.suite {
            return Err(ClientError::Protocol("BMC chose another cipher suite"));
        }
        let mut console_random = [0u8; 16];
        rng.fill(&mut console_random);
        let rakp1 = Rakp1 {
            tag: 0,
            bmc_session_id: bmc_id,
            console_random,
            role: self.privilege.code() | NAME_ONLY_LOOKUP,
            username: self.username.clone(),
        };
        let datagram = v20::encode(v20::payload::RAKP1, 0, 0, &rakp1.encode(), None, [0; 16]);
        self.stage = Stage::Rakp1Sent { bmc_id, rakp1 };
        Ok(datagram)
    }

    /// Takes RAKP 2; returns RAKP 3 (with an error status if RAKP 2 does not verify, as
    /// ipmitool sends it, together with the error).
    pub fn on_rakp2(&mut self, datagram: &[u8]) -> Result<Vec<u8>, ClientError> {
        let Stage::Rakp1Sent { bmc_id, rakp1 } = &self.stage else {
            return Err(ClientError::Protocol("RAKP 2 out of order"));
        };
        let rakp2 = RakpReply::decode(&Self::payload(datagram, v20::payload::RAKP2)?)?;
        if rakp2.status != status::OK {
            return Err(ClientError::Status(rakp2.status));
        }
        let code_len = self.suite.auth_code_len();
        if rakp2.data.len() != 32 + code_len || rakp2.session_id != self.console_id {
            return Err(ClientError::Protocol("malformed RAKP 2"));
        }
        let exchange = Exchange {
            suite: self.suite,
            console_session_id: self.console_id,
            bmc_session_id: *bmc_id,
            console_random: rakp1.console_random,
            bmc_random: rakp2.data[..16].try_into().expect("16"),
            bmc_guid: rakp2.data[16..32].try_into().expect("16"),
            role: rakp1.role,
            username: rakp1.username.clone(),
        };
        let ok = crate::crypto::ct_eq(&exchange.rakp2_code(&self.key), &rakp2.data[32..]);
        let rakp3 = RakpReply {
            tag: 0,
            status: if ok {
                status::OK
            } else {
                status::INVALID_INTEGRITY_CHECK
            },
            session_id: *bmc_id,
            data: exchange.rakp3_code(&self.key),
        };
        let datagram = v20::encode(v20::payload::RAKP3, 0, 0, &rakp3.encode(), None, [0; 16]);
        if !ok {
            self.stage = Stage::Start;
            return Err(ClientError::Protocol(
                "RAKP 2 does not verify: wrong password",
            ));
        }
        self.stage = Stage::Rakp3Sent {
            exchange: Box::new(exchange),
        };
        Ok(datagram)
    }

    /// Takes RAKP 4; the session is then active.
    pub fn on_rakp4(&mut self, datagram: &[u8]) -> Result<(), ClientError> {
        let Stage::Rakp3Sent { exchange } = &self.stage else {
            return Err(ClientError::Protocol("RAKP 4 out of order"));
        };
        let rakp4 = RakpReply::decode(&Self::payload(datagram, v20::payload::RAKP4)?)?;
        if rakp4.status != status::OK {
            return Err(ClientError::Status(rakp4.status));
        }
        let sik = exchange.sik(self.kg.as_ref().unwrap_or(&self.key));
        if !crate::crypto::ct_eq(&exchange.rakp4_icv(&sik), &rakp4.data) {
            return Err(ClientError::Protocol("RAKP 4 does not verify"));
        }
        self.stage = Stage::Active {
            bmc_id: exchange.bmc_session_id,
            keys: Box::new(self.suite.keys(&sik)),
        };
        Ok(())
    }

    /// A request inside the session; `iv` is used when the suite encrypts.
    pub fn request(&mut self, net_fn: u8, cmd: u8, data: &[u8], iv: [u8; 16]) -> Vec<u8> {
        let Stage::Active { bmc_id, keys } = &self.stage else {
            return Vec::new();
        };
        self.seq = self.seq.wrapping_add(1).max(1);
        self.rq_seq = (self.rq_seq + 1) & 0x3F;
        let message = IpmiRequest::new(net_fn, cmd, self.rq_seq, data).encode();
        v20::encode(
            v20::payload::IPMI,
            *bmc_id,
            self.seq,
            &message,
            Some(keys),
            iv,
        )
    }

    /// A retransmission: a new session packet around a request with a given rqSeq.
    pub fn request_with_rq_seq(
        &mut self,
        net_fn: u8,
        cmd: u8,
        data: &[u8],
        iv: [u8; 16],
        rq_seq: u8,
    ) -> Vec<u8> {
        self.rq_seq = rq_seq.wrapping_sub(1) & 0x3F;
        self.request(net_fn, cmd, data, iv)
    }

    /// Decodes (verifying integrity) a response inside the session.
    pub fn response(&self, datagram: &[u8]) -> Result<IpmiResponse, ClientError> {
        let Stage::Active { keys, .. } = &self.stage else {
            return Err(ClientError::Protocol("no session"));
        };
        let rmcp::Rmcp::Ipmi(body) = rmcp::decode(datagram)? else {
            return Err(ClientError::Protocol("not an IPMI datagram"));
        };
        let packet = v20::decode(body)?;
        if packet.header.session_id != self.console_id {
            return Err(ClientError::Protocol("response for another session"));
        }
        Ok(IpmiResponse::decode(&packet.open(keys)?)?)
    }

    /// A SOL packet (payload type 1) inside the session.
    pub fn sol(&mut self, payload: &[u8], iv: [u8; 16]) -> Vec<u8> {
        let Stage::Active { bmc_id, keys } = &self.stage else {
            return Vec::new();
        };
        self.seq = self.seq.wrapping_add(1).max(1);
        v20::encode(
            v20::payload::SOL,
            *bmc_id,
            self.seq,
            payload,
            Some(keys),
            iv,
        )
    }

    /// Opens any datagram of the session: its payload type and plain payload.
    pub fn open(&self, datagram: &[u8]) -> Result<(u8, Vec<u8>), ClientError> {
        let Stage::Active { keys, .. } = &self.stage else {
            return Err(ClientError::Protocol("no session"));
        };
        let rmcp::Rmcp::Ipmi(body) = rmcp::decode(datagram)? else {
            return Err(ClientError::Protocol("not an IPMI datagram"));
        };
        let packet = v20::decode(body)?;
        if packet.header.session_id != self.console_id {
            return Err(ClientError::Protocol("packet for another session"));
        }
        Ok((packet.header.payload_type, packet.open(keys)?))
    }
}
