//! The IPMI front end: a thin UDP loop around the pure session layer
//! ([`kubevirt_bmc_ipmi::Server`]) and the pure command decisions ([`commands::decide`]);
//! the only I/O is the socket and the [`Machine`] calls.

pub mod boot;
pub mod commands;
pub mod inventory;
mod socket;
mod sol;

#[cfg(test)]
mod tests;

use kubevirt_bmc_contract::annotations::IpmiAuth;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use kubevirt_bmc_ipmi::session::{Event, Outcome, Reply};
use kubevirt_bmc_ipmi::{AppRequest, IpmiRequest, IpmiResponse, Server, ServerConfig};

use crate::bmc::SerialConsole;
use crate::credentials::Credentials;
use crate::machine::{Machine, PowerState};
use commands::{Action, Memo, Snapshot, completion_code, decide, ipmi_guid};
use kubevirt_bmc_ipmi::sol::SolConfig;
use socket::DatagramSocket;

/// Random bytes from the OS-seeded thread RNG, as the session layer asks for them.
fn fill_random(buf: &mut [u8]) {
    rand::RngCore::fill_bytes(&mut rand::rng(), buf);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Session and memo state stay consistent per call; a panic elsewhere must not stop IPMI.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hours-powered-on accounting for Get POH Counter.
#[derive(Default)]
struct PowerOnHours {
    total: Duration,
    on_since: Option<Instant>,
}

impl PowerOnHours {
    fn observe(&mut self, on: bool, now: Instant) -> u64 {
        match (on, self.on_since) {
            (true, None) => self.on_since = Some(now),
            (false, Some(since)) => {
                self.total += now - since;
                self.on_since = None;
            }
            _ => {}
        }
        (self.total + self.on_since.map_or(Duration::ZERO, |s| now - s)).as_secs()
    }
}

struct Context {
    socket: DatagramSocket,
    /// The machine's console while a session holds SOL.
    attached: Mutex<Option<sol::Attached>>,
    /// SOL's enable switch as Redfish reports it.
    serial_console: SerialConsole,
    machine: Arc<dyn Machine>,
    sessions: Mutex<Server>,
    memo: Mutex<Memo>,
    poh: Mutex<PowerOnHours>,
    username: Vec<u8>,
    started: Instant,
    login_policy: Mutex<LoginPolicy>,
}

/// How often the VM's login policy is looked at again (a cache read, no API call).
const LOGIN_POLICY_CHECK: Duration = Duration::from_secs(1);

/// The login policy in force and what is needed to follow the VM's changes to it.
struct LoginPolicy {
    auth: IpmiAuth,
    default: IpmiAuth,
    /// Why `compatible` cannot be allowed with this password (v1.5 would cut it), if so.
    compatible_problem: Option<String>,
    checked: Option<Duration>,
    checking: bool,
}

impl LoginPolicy {
    /// Whether to look at the VM's policy again now (one look at a time).
    fn due(&mut self, now: Duration) -> bool {
        let due = !self.checking
            && self
                .checked
                .is_none_or(|at| now.saturating_sub(at) >= LOGIN_POLICY_CHECK);
        if due {
            self.checking = true;
            self.checked = Some(now);
        }
        due
    }

    /// The policy to switch to for what the VM asks (`None` for "as the installation
    /// says"), or None to stay; a refusal to switch is logged, as the password that
    /// forbids it was already reported at start.
    fn change(&mut self, asked: Option<IpmiAuth>) -> Option<IpmiAuth> {
        self.checking = false;
        let wanted = asked.unwrap_or(self.default);
        if wanted == self.auth {
            return None;
        }
        if wanted == IpmiAuth::Compatible
            && let Some(problem) = &self.compatible_problem
        {
            tracing::warn!(%problem, "not allowing IPMI v1.5 logins as the VM now asks");
            return None;
        }
        self.auth = wanted;
        Some(wanted)
    }
}

/// A bound IPMI server, ready to run.
pub struct IpmiServer {
    context: Arc<Context>,
    /// The login policy in force: the VM's `ipmi-auth`, or the default given to `bind`.
    pub auth: IpmiAuth,
}

/// The machine's own login policy (the VM's `bmc.kubevirt.io/ipmi-auth`), else `default`.
/// Read at start; later changes are followed by [`follow_login_policy`].
async fn machine_auth(machine: &dyn Machine, default: IpmiAuth) -> IpmiAuth {
    match machine.record(crate::machine::Record::IpmiAuth).await {
        Ok(Some(value)) => IpmiAuth::parse(&value).unwrap_or_else(|error| {
            tracing::warn!(%error, using = default.as_str(), "ignoring the machine's IPMI login policy");
            default
        }),
        Ok(None) => default,
        Err(error) => {
            tracing::warn!(%error, using = default.as_str(), "cannot read the machine's IPMI login policy");
            default
        }
    }
}

impl IpmiServer {
    /// Binds the UDP socket at once, so a bad address fails before anything runs.
    pub async fn bind(
        addr: SocketAddr,
        machine: Arc<dyn Machine>,
        credentials: &Credentials,
        max_sessions: usize,
        default_auth: IpmiAuth,
    ) -> std::io::Result<IpmiServer> {
        let socket = DatagramSocket::bind(addr)?;
        size_receive_buffer(&socket, max_sessions);
        let (guid, auth) = match machine.inventory().await {
            // The machine answers: its login policy is at hand without waiting again.
            Ok(inventory) => (
                ipmi_guid(&inventory.uuid),
                machine_auth(machine.as_ref(), default_auth).await,
            ),
            Err(error) => {
                tracing::warn!(%error, default = default_auth.as_str(), "machine unknown; RAKP uses a zero GUID and the default IPMI login policy");
                ([0; 16], default_auth)
            }
        };
        let legacy = auth == IpmiAuth::Compatible;
        let mut config = ServerConfig::new(
            credentials.username.as_bytes(),
            credentials.password.as_bytes(),
            guid,
        );
        // The console is attached when SOL is activated, not now.
        config.console = machine.has_console();
        if !config.console {
            tracing::info!("no serial console: SOL activation will be refused");
        }
        config.max_sessions = max_sessions;
        config.legacy = legacy;
        tracing::info!(
            legacy,
            "IPMI logins: RMCP+ cipher suites 3 and 17{}",
            if legacy {
                ", IPMI v1.5 and suites 1 and 2"
            } else {
                " only"
            }
        );
        // SOL rides on the session's own port; Activate Payload reports it.
        config.sol = SolConfig::new(socket.local_addr()?.port());
        let serial_console = SerialConsole::new(config.console, config.sol.enabled);
        Ok(IpmiServer {
            context: Arc::new(Context {
                attached: Mutex::new(None),
                serial_console,
                socket,
                machine,
                sessions: Mutex::new(Server::new(config)),
                memo: Mutex::new(Memo::default()),
                poh: Mutex::new(PowerOnHours::default()),
                username: credentials.username.as_bytes().to_vec(),
                started: Instant::now(),
                login_policy: Mutex::new(LoginPolicy {
                    auth,
                    default: default_auth,
                    compatible_problem: IpmiAuth::Compatible
                        .password_problem(credentials.password.as_bytes()),
                    checked: None,
                    checking: false,
                }),
            }),
            auth,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.context.socket.local_addr()
    }

    /// The serial console's state as this server's SOL configuration sets it, for the
    /// Redfish front end.
    pub fn serial_console(&self) -> SerialConsole {
        self.context.serial_console.clone()
    }

    /// Serves until the socket fails; returns that error.
    pub async fn run(self) -> std::io::Error {
        let ctx = self.context;
        if let Ok(addr) = ctx.socket.local_addr() {
            tracing::info!(%addr, "IPMI (RMCP, RMCP+) listening");
        }
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, peer) = match ctx.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                // ICMP port unreachable from an earlier send surfaces here on some systems.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
                Err(e) => return e,
            };
            let now = ctx.started.elapsed();
            if lock(&ctx.login_policy).due(now) {
                tokio::spawn(follow_login_policy(ctx.clone()));
            }
            let (outcome, sol_events, sol_enabled) = {
                let mut sessions = lock(&ctx.sessions);
                let outcome = sessions.handle(&buf[..n], peer, now, &mut fill_random);
                // A closed or expired session may have held SOL.
                let events = sessions.take_sol_events();
                (outcome, events, sessions.sol_config().enabled)
            };
            ctx.serial_console.set_enabled(sol_enabled);
            sol::handle_events(&ctx, &sol_events);
            match outcome {
                Outcome::Console(input) => sol::deliver(&ctx, input).await,
                Outcome::Reply(Reply {
                    datagrams,
                    delay,
                    event,
                }) => {
                    sol::send_elsewhere(&ctx).await;
                    if delay.is_zero() {
                        for datagram in &datagrams {
                            send(&ctx, datagram, peer).await;
                        }
                    } else {
                        let ctx = ctx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            for datagram in &datagrams {
                                send(&ctx, datagram, peer).await;
                            }
                        });
                    }
                    // Only after the reply is on the wire: an activation attaches the
                    // console, whose first output must not overtake the Activate Payload
                    // response. ipmitool (lanplus.c, ipmi_lan_poll_single) returns a SOL
                    // packet arriving first as the response, with the completion code of
                    // the previous one (0xC1 of its PICMG probe): "Error activating SOL
                    // payload: Invalid command".
                    if let Some(event) = &event {
                        log_event(event, peer);
                        sol::on_events(&ctx, std::slice::from_ref(event));
                    }
                }
                Outcome::Request(app) => {
                    // Most commands finish at once (machine reads come from local state):
                    // answer those inline; only a command still waiting on the machine
                    // gets a task of its own, so a slow backend never stalls the loop.
                    let ctx = ctx.clone();
                    let mut pending = Box::pin(async move { answer(&ctx, app).await });
                    if futures::poll!(pending.as_mut()).is_pending() {
                        tokio::spawn(pending);
                    }
                }
                Outcome::Drop(reason) => tracing::debug!(%peer, %reason, "IPMI datagram dropped"),
            }
        }
    }
}

/// Applies a change of the VM's `ipmi-auth` while the BMC runs: tightened, the v1.5 and
/// weak-suite sessions end at once. Off the receive loop, as the machine may be slow to
/// answer (its cache still syncing); an unreadable policy keeps the one in force.
async fn follow_login_policy(ctx: Arc<Context>) {
    let asked = match ctx.machine.record(crate::machine::Record::IpmiAuth).await {
        Ok(Some(value)) => IpmiAuth::parse(&value).ok(),
        Ok(None) => None,
        Err(error) => {
            tracing::debug!(%error, "cannot read the machine's IPMI login policy now");
            lock(&ctx.login_policy).checking = false;
            return;
        }
    };
    let Some(auth) = lock(&ctx.login_policy).change(asked) else {
        return;
    };
    let ended = lock(&ctx.sessions).set_legacy(auth == IpmiAuth::Compatible);
    tracing::info!(
        policy = auth.as_str(),
        ended_sessions = ended.len(),
        "IPMI login policy changed by the VM"
    );
}

/// Receive-buffer bytes asked per session: every session may have a request and a
/// retransmission queued while the loop is busy, and the kernel charges a small datagram
/// about 1-2 KiB of buffer (it doubles the size asked, for that overhead).
const RECEIVE_BUFFER_PER_SESSION: usize = 2048;

/// Makes the socket's receive buffer hold a burst from every session the table admits.
/// The system default (~208 KiB) holds about 200 queued datagrams, so a full table of 1024
/// sessions polling at once loses datagrams while the loop is busy (the load command
/// counted them). Best effort: the kernel caps it at net.core.rmem_max.
fn size_receive_buffer(socket: &impl std::os::fd::AsFd, max_sessions: usize) {
    let socket = socket2::SockRef::from(socket);
    let wanted = max_sessions.saturating_mul(RECEIVE_BUFFER_PER_SESSION);
    match socket.recv_buffer_size() {
        // The kernel reports twice what was asked: compare like with like.
        Ok(current) if current / 2 >= wanted => {}
        _ => {
            if let Err(error) = socket.set_recv_buffer_size(wanted) {
                tracing::warn!(%error, wanted, "cannot size the IPMI receive buffer");
            }
        }
    }
    if let Ok(size) = socket.recv_buffer_size() {
        tracing::debug!(bytes = size, "IPMI receive buffer");
    }
}

async fn send(ctx: &Context, datagram: &[u8], peer: SocketAddr) {
    if let Err(error) = ctx.socket.send_to(datagram, peer).await {
        tracing::debug!(%peer, %error, "IPMI reply not sent");
    }
}

fn log_event(event: &Event, peer: SocketAddr) {
    match event {
        Event::SessionOpened {
            id,
            protocol,
            cipher_suite,
        } => {
            tracing::info!(%peer, session = format!("{id:#010x}"), protocol, ?cipher_suite, "IPMI session opened")
        }
        Event::SessionClosed { id } => {
            // Opening is the audit record (who, from where, how); a closing line for every
            // poll of a power-status sync only doubled the log.
            tracing::debug!(%peer, session = format!("{id:#010x}"), "IPMI session closed")
        }
        Event::SessionsExpired { ids } => {
            tracing::info!(count = ids.len(), "idle IPMI sessions expired")
        }
        Event::LoginRefused { reason } => tracing::warn!(%peer, reason, "IPMI login refused"),
        Event::SolActivated { id } => {
            tracing::info!(%peer, session = format!("{id:#010x}"), "SOL activated")
        }
        Event::SolDeactivated { id } => {
            tracing::info!(session = format!("{id:#010x}"), "SOL deactivated")
        }
    }
}

async fn answer(ctx: &Context, app: AppRequest) {
    let response = execute(ctx, &app.request).await;
    let datagram = lock(&ctx.sessions).respond(&app.route, &response, &mut fill_random);
    match datagram {
        Some(d) => send(ctx, &d, app.route.peer).await,
        None => tracing::debug!("IPMI session gone before its response"),
    }
}

/// Reads the machine, decides, runs the action; the response tells the client the truth.
async fn execute(ctx: &Context, request: &IpmiRequest) -> IpmiResponse {
    let m = &ctx.machine;
    let read = async {
        tokio::try_join!(
            m.power_state(),
            m.boot_override(),
            m.inventory(),
            m.restore_policy()
        )
    };
    let (power, boot, inventory, restore_policy) = match read.await {
        Ok(r) => r,
        Err(error) => {
            tracing::warn!(%error, "machine state unreadable");
            return request.response(completion_code(&error), &[]);
        }
    };
    let unix_time = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    let mut memo = lock(&ctx.memo).clone();
    memo.powered_on_secs =
        lock(&ctx.poh).observe(power.settled() == PowerState::On, Instant::now());
    let snap = Snapshot {
        power,
        boot,
        restore_policy,
        inventory: &inventory,
        supported_actions: m.supported_actions(),
        supported_targets: m.supported_boot_targets(),
        username: &ctx.username,
        unix_time,
    };
    let decision = decide(request, &snap, &memo);
    if let Some(action) = decision.action {
        let result = match action {
            Action::Power(a) => m.power(a).await,
            Action::SetBoot(b) => m.set_boot_override(b).await,
            Action::SetRestorePolicy(p) => m.set_restore_policy(p).await,
        };
        if let Err(error) = result {
            tracing::info!(?action, %error, "IPMI command refused by the machine");
            return request.response(completion_code(&error), &[]);
        }
        tracing::info!(?action, "IPMI command applied");
    }
    if let Some(next) = decision.memo {
        *lock(&ctx.memo) = next;
    }
    request.response(decision.cc, &decision.data)
}
