//! The floor under the bench's IPMI CPU row: a UDP server that answers every datagram with
//! the datagram itself and does nothing else, and a client process that makes as many round
//! trips as one `ipmitool -I lanplus power status` session (11, counted with strace) and
//! exits, as ipmitool does, pausing before each request as long as ipmitool does. The CPU
//! the echo server spends per client process is what the kernel and the runtime charge for
//! those datagrams before any IPMI work: no IPMI server on the same socket API can spend less.
//!
//! The pauses matter as much as the count: a server that waits longer between datagrams pays
//! more for each wake-up (on the 2-vCPU VM of 2026-12-03 this client cost the tokio echo
//! 117-135 µs per session back to back and 149-174 µs with ipmitool's pauses, by schedstat).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

#[derive(Debug, Parser)]
#[command(about = "A bare UDP echo server and its client, the floor of the IPMI CPU row")]
struct Args {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Answers every datagram with itself until killed.
    Serve {
        #[arg(long, env = "KUBEVIRT_BMC_FLOOR_LISTEN")]
        listen: SocketAddr,
        /// How the socket is waited on: the sidecar's own way (a current-thread tokio
        /// runtime, epoll) or a thread blocked in recvfrom.
        #[arg(long, env = "KUBEVIRT_BMC_FLOOR_IO", value_enum, default_value_t = Io::Tokio)]
        io: Io,
    },
    /// Makes `round_trips` request/answer exchanges on a new socket and exits 0 when each
    /// was answered with what was sent.
    Client {
        #[arg(long, env = "KUBEVIRT_BMC_FLOOR_SERVER")]
        server: SocketAddr,
        #[arg(long, env = "KUBEVIRT_BMC_FLOOR_ROUND_TRIPS", default_value_t = 11)]
        round_trips: u32,
        /// Bytes per datagram; ipmitool's lanplus datagrams are 30 to 90 bytes.
        #[arg(long, env = "KUBEVIRT_BMC_FLOOR_DATAGRAM_BYTES", default_value_t = 64)]
        datagram_bytes: usize,
        /// Microseconds of work before each request, the last repeated for any further round
        /// trip. The default is ipmitool's: the median gap between our answer and its next
        /// request over 20 `ipmitool -I lanplus -C 3 power status` sessions against
        /// `kubevirt-bmc simulate` (`tcpdump -tt -i lo`, 2026-12-03; the gaps are its RAKP
        /// and AES-CBC work and the output of the answer).
        #[arg(
            long,
            env = "KUBEVIRT_BMC_FLOOR_THINK_MICROS",
            value_delimiter = ',',
            default_value = "0,227,247,955,192,192,178,190,192,200,212"
        )]
        think_micros: Vec<u64>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Io {
    Tokio,
    Blocking,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Mode::Serve { listen, io } => match io {
            Io::Blocking => serve_blocking(listen),
            Io::Tokio => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(serve_tokio(listen)),
        },
        Mode::Client {
            server,
            round_trips,
            datagram_bytes,
            think_micros,
        } => client(server, round_trips, datagram_bytes, &think_micros),
    }
}

fn serve_blocking(listen: SocketAddr) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(listen).with_context(|| format!("bind {listen}"))?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, peer) = socket.recv_from(&mut buf)?;
        socket.send_to(&buf[..n], peer)?;
    }
}

async fn serve_tokio(listen: SocketAddr) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(listen).with_context(|| format!("bind {listen}"))?;
    socket.set_nonblocking(true)?;
    // Readable interest only, as the sidecar's IPMI socket (sidecar/src/ipmi/socket.rs, which
    // says why this deprecated call is sound): tokio's UdpSocket would also wake on every
    // writable edge and charge the floor for a wake-up ours does not have.
    #[allow(deprecated)]
    let socket = AsyncFd::with_interest(socket, Interest::READABLE)?;
    let mut buf = [0u8; 2048];
    loop {
        let mut ready = socket.readable().await?;
        let Ok(received) = ready.try_io(|s| s.get_ref().recv_from(&mut buf)) else {
            continue;
        };
        let (n, peer) = received?;
        socket.get_ref().send_to(&buf[..n], peer)?;
    }
}

fn client(
    server: SocketAddr,
    round_trips: u32,
    datagram_bytes: usize,
    think_micros: &[u64],
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.connect(server)?;
    // ipmitool's own patience for one answer.
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut answer = vec![0u8; datagram_bytes + 1];
    for trip in 0..round_trips {
        let request = vec![trip as u8; datagram_bytes];
        let think = think_micros
            .get(trip as usize)
            .or(think_micros.last())
            .copied()
            .unwrap_or(0);
        work_for(Duration::from_micros(think));
        socket.send(&request)?;
        let n = socket
            .recv(&mut answer)
            .with_context(|| format!("no answer to round trip {trip} from {server}"))?;
        if answer[..n] != request[..] {
            bail!("round trip {trip}: the answer is not the datagram sent");
        }
    }
    Ok(())
}

/// Keeps this CPU busy for `time`, as ipmitool computes between datagrams rather than
/// sleeping: a sleeping client would leave its CPU idle and change the server's wake-ups.
fn work_for(time: Duration) {
    let start = Instant::now();
    while start.elapsed() < time {
        std::hint::spin_loop();
    }
}
