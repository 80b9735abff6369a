//! An RMCP+ session over its own UDP socket, driven by the IPMI crate's RAKP client: the
//! one IPMI client of the table (against ours and the pyghmi peer) and of the load command.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kubevirt_bmc_ipmi::Privilege;
use kubevirt_bmc_ipmi::client::Client;
use kubevirt_bmc_ipmi::crypto::CipherSuite;
use kubevirt_bmc_ipmi::message::{IpmiResponse, netfn};
use tokio::net::UdpSocket;

use super::BenchError;
use super::stats::{Latencies, Row};

pub const GET_DEVICE_ID: (u8, u8) = (netfn::APP, 0x01);
pub const GET_ACPI_POWER_STATE: (u8, u8) = (netfn::APP, 0x07);
pub const SET_SESSION_PRIVILEGE: (u8, u8) = (netfn::APP, 0x3B);
pub const CLOSE_SESSION: (u8, u8) = (netfn::APP, 0x3C);
pub const GET_CHASSIS_STATUS: (u8, u8) = (netfn::CHASSIS, 0x01);
pub const GET_SYSTEM_BOOT_OPTIONS: (u8, u8) = (netfn::CHASSIS, 0x09);

/// How long to wait for an answer and how often to send again, like ipmitool's `-N`/`-R`.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub timeout: Duration,
    pub retries: u32,
}

impl Patience {
    /// One attempt: the table counts a lost answer as an error instead of hiding it.
    pub const ONCE: Patience = Patience {
        timeout: Duration::from_secs(1),
        retries: 0,
    };
    /// ipmitool's defaults (`-N 1 -R 4`): for logins, which are set-up, not measured.
    pub const IPMITOOL: Patience = Patience {
        timeout: Duration::from_secs(1),
        retries: 4,
    };
}

/// A small xorshift generator: IVs and RAKP nonces for a bench client need no more.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

pub struct Session {
    socket: UdpSocket,
    client: Client,
    rng: Rng,
    rq_seq: u8,
    patience: Patience,
    /// Requests sent again after a timeout (each one a datagram that went missing).
    pub retransmits: u64,
    /// Answers that arrived after their request had been sent again.
    pub late_answers: u64,
}

/// An RMCP+ datagram with the encrypted or authenticated bit set (IPMI v2.0 section 13.6:
/// the payload type byte follows the RMCP header and the auth type 0x06).
fn is_protected(datagram: &[u8]) -> bool {
    datagram.get(4) == Some(&0x06) && datagram.get(5).is_some_and(|t| t & 0xC0 != 0)
}

impl Session {
    /// Opens a session (Open Session, RAKP 1-4) at ADMINISTRATOR with cipher suite `suite`.
    /// A lost datagram restarts the login from Open Session, as ipmitool does; the count of
    /// restarts is returned with the session.
    pub async fn login(
        bmc: SocketAddr,
        suite: u8,
        user: &str,
        password: &str,
        seed: u64,
        patience: Patience,
    ) -> Result<(Session, u32), BenchError> {
        let suite = CipherSuite::by_id(suite)
            .ok_or_else(|| BenchError::Ipmi(format!("no cipher suite {suite}")))?;
        let mut restarts = 0;
        loop {
            let socket = UdpSocket::bind("127.0.0.1:0")
                .await
                .map_err(BenchError::io("binding a UDP socket"))?;
            socket
                .connect(bmc)
                .await
                .map_err(BenchError::io("connecting a UDP socket"))?;
            let console_id = (seed as u32) | 1;
            let client = Client::new(
                user.as_bytes(),
                password.as_bytes(),
                suite,
                Privilege::Administrator,
                console_id,
            );
            let mut session = Session {
                socket,
                client,
                rng: Rng::new(seed.wrapping_add(u64::from(restarts))),
                rq_seq: 0,
                patience,
                retransmits: 0,
                late_answers: 0,
            };
            match session.rakp().await {
                Ok(()) => return Ok((session, restarts)),
                Err(BenchError::IpmiTimeout { .. }) if restarts < patience.retries => {
                    restarts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn rakp(&mut self) -> Result<(), BenchError> {
        let ipmi = |e: kubevirt_bmc_ipmi::client::ClientError| BenchError::Ipmi(e.to_string());
        let open = self.client.open_session_request();
        let rsp = self.exchange_once(&open).await?;
        let mut rng = |b: &mut [u8]| self.rng.fill(b);
        let rakp1 = self
            .client
            .on_open_session_response(&rsp, &mut rng)
            .map_err(ipmi)?;
        let rakp2 = self.exchange_once(&rakp1).await?;
        let rakp3 = self.client.on_rakp2(&rakp2).map_err(ipmi)?;
        let rakp4 = self.exchange_once(&rakp3).await?;
        self.client.on_rakp4(&rakp4).map_err(ipmi)
    }

    /// One login step. Its answer is never protected (no session keys yet): a protected
    /// datagram is the late answer to a session whose socket had this port before (a login
    /// that timed out on a loaded machine, then the kernel handed the port out again), and
    /// is skipped instead of failing the run.
    async fn exchange_once(&mut self, datagram: &[u8]) -> Result<Vec<u8>, BenchError> {
        self.socket
            .send(datagram)
            .await
            .map_err(BenchError::io("sending"))?;
        let mut buf = [0u8; 1024];
        let deadline = Instant::now() + self.patience.timeout;
        loop {
            match self.recv_before(deadline, &mut buf).await? {
                Some(n) if is_protected(&buf[..n]) => self.late_answers += 1,
                Some(n) => return Ok(buf[..n].to_vec()),
                None => return Err(BenchError::IpmiTimeout { attempts: 1 }),
            }
        }
    }

    /// One datagram's length, or None once `deadline` passes without one.
    async fn recv_before(
        &self,
        deadline: Instant,
        buf: &mut [u8],
    ) -> Result<Option<usize>, BenchError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.socket.recv(buf)).await {
            Ok(Ok(n)) => Ok(Some(n)),
            Ok(Err(e)) => Err(BenchError::io("receiving")(e)),
            Err(_) => Ok(None),
        }
    }

    /// One command; sent again with the same rqSeq after each timeout (the BMC answers a
    /// retransmission from its cache), up to the patience's retries.
    pub async fn call(
        &mut self,
        (net_fn, cmd): (u8, u8),
        data: &[u8],
    ) -> Result<IpmiResponse, BenchError> {
        self.rq_seq = (self.rq_seq + 1) & 0x3F;
        let rq_seq = self.rq_seq;
        let attempts = self.patience.retries + 1;
        let mut buf = [0u8; 1024];
        for attempt in 0..attempts {
            let mut iv = [0u8; 16];
            self.rng.fill(&mut iv);
            let datagram = self
                .client
                .request_with_rq_seq(net_fn, cmd, data, iv, rq_seq);
            if attempt > 0 {
                self.retransmits += 1;
            }
            self.socket
                .send(&datagram)
                .await
                .map_err(BenchError::io("sending"))?;
            let deadline = Instant::now() + self.patience.timeout;
            while let Some(n) = self.recv_before(deadline, &mut buf).await? {
                let response = self
                    .client
                    .response(&buf[..n])
                    .map_err(|e| BenchError::Ipmi(e.to_string()))?;
                if response.rq_seq == rq_seq && response.cmd == cmd {
                    return Ok(response);
                }
                // The answer to an earlier attempt of an earlier command: not this one.
                self.late_answers += 1;
            }
        }
        Err(BenchError::IpmiTimeout { attempts })
    }

    /// Set Session Privilege Level to ADMINISTRATOR, as ipmitool does after every login: a
    /// session starts at USER, and boot options need OPERATOR.
    pub async fn raise_to_administrator(&mut self) -> Result<(), BenchError> {
        let response = self.call(SET_SESSION_PRIVILEGE, &[4]).await?;
        if response.cc == 0 {
            Ok(())
        } else {
            Err(BenchError::Ipmi(format!(
                "Set Session Privilege Level answered {:#04x}",
                response.cc
            )))
        }
    }

    /// Close Session for this session; the BMC must answer completion code 0.
    pub async fn close(mut self) -> Result<(), BenchError> {
        let id = self
            .client
            .bmc_session_id()
            .ok_or_else(|| BenchError::Ipmi("no session to close".into()))?;
        let response = self.call(CLOSE_SESSION, &id.to_le_bytes()).await?;
        if response.cc == 0 {
            Ok(())
        } else {
            Err(BenchError::Ipmi(format!(
                "Close Session answered {:#04x}",
                response.cc
            )))
        }
    }
}

/// Logs in and out until `bmc` answers (a server just started may not listen yet).
pub async fn wait_ready(bmc: SocketAddr, suite: u8, password: &str) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let patience = Patience {
            timeout: Duration::from_millis(300),
            retries: 0,
        };
        match Session::login(bmc, suite, "admin", password, 7, patience).await {
            Ok((session, _)) => {
                // Readiness only; the pyghmi peer's Close Session is not under test here.
                let _ = session.close().await;
                return Ok(());
            }
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// `sessions` concurrent sessions (cipher suite `suite`), each sending Get Chassis Status
/// back to back for `duration`: the table's IPMI rows. A missing or failed answer counts
/// as an error (no retransmission hides it).
pub async fn throughput(
    bmc: SocketAddr,
    sessions: usize,
    duration: Duration,
    suite: u8,
    password: &str,
) -> Result<Row, BenchError> {
    let mut logged_in = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let (session, _) = Session::login(
            bmc,
            suite,
            "admin",
            password,
            1000 + i as u64,
            Patience::IPMITOOL,
        )
        .await?;
        // Only the measured calls must not be retried.
        let session = Session {
            patience: Patience::ONCE,
            ..session
        };
        logged_in.push(session);
    }
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = logged_in
        .into_iter()
        .map(|mut session| {
            tokio::spawn(async move {
                let mut latencies = Latencies::default();
                let mut errors = 0u64;
                while Instant::now() < end {
                    let sent = Instant::now();
                    match session.call(GET_CHASSIS_STATUS, &[]).await {
                        Ok(r) if r.cc == 0 => latencies.push(sent.elapsed()),
                        _ => errors += 1,
                    }
                }
                (latencies, errors, session)
            })
        })
        .collect();
    let mut all = Latencies::default();
    let mut errors = 0;
    let mut open = Vec::with_capacity(sessions);
    for task in tasks {
        let (latencies, e, session) = task
            .await
            .map_err(|e| BenchError::Ipmi(format!("session task: {e}")))?;
        all.extend(latencies);
        errors += e;
        open.push(session);
    }
    let row = Row::from_latencies(all, start.elapsed(), errors);
    // Closed as ipmitool closes its sessions: left open, they hold the BMC's session table
    // (32 by default) until they time out, and the next cell's logins are refused (RMCP+
    // status 0x01, insufficient resources). Not measured; a close that gets no answer only
    // leaves a session to time out.
    for session in open {
        let _ = session.close().await;
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::is_protected;

    #[test]
    fn login_answers_are_plain_and_session_packets_protected() {
        // The first bytes of an Open Session response and of an encrypted, authenticated
        // IPMI message, as the BMC sent them to ipmitool (strace).
        let open_session_response = [0x06, 0x00, 0xff, 0x07, 0x06, 0x11, 0x00, 0x00];
        let in_session = [0x06, 0x00, 0xff, 0x07, 0x06, 0xc0, 0x77, 0x3f];
        let v15 = [0x06, 0x00, 0xff, 0x07, 0x00, 0xc0, 0x00, 0x00];
        assert!(!is_protected(&open_session_response));
        assert!(is_protected(&in_session));
        assert!(!is_protected(&v15), "auth type 0 is IPMI v1.5, not RMCP+");
        assert!(!is_protected(&[0x06, 0x00]));
    }
}
