//! The floor under the bench's IPMI CPU row: a UDP server that answers every datagram with
//! the datagram itself and does nothing else, and a client process that makes as many round
//! trips as one `ipmitool -I lanplus power status` session (11, counted with strace) and
//! exits, as ipmitool does. The CPU the echo server spends per client process is what the
//! kernel and the runtime charge for those datagrams before any IPMI work: no IPMI server on
//! the same socket API can spend less.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

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
        } => client(server, round_trips, datagram_bytes),
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

fn client(server: SocketAddr, round_trips: u32, datagram_bytes: usize) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.connect(server)?;
    // ipmitool's own patience for one answer.
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut answer = vec![0u8; datagram_bytes + 1];
    for trip in 0..round_trips {
        let request = vec![trip as u8; datagram_bytes];
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
