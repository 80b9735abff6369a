//! The IPMI UDP socket, watched for readability only.
//!
//! tokio's `UdpSocket` registers for reading and writing, edge-triggered, so every reply
//! sent makes the socket writable again and wakes the runtime once for nothing before the
//! next request arrives (strace of one `ipmitool power status` session: 21 `epoll_wait`
//! for 11 datagrams, every other one returning only `EPOLLOUT`). A datagram send never
//! waits for room in practice: the kernel queues it or, with the send buffer full, says
//! so at once, and then a short pause and another try do.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Tries of a send that found the socket's send buffer full, a pause between each; a
/// client retransmits a reply that never came, so giving up loses nothing for good.
const SEND_TRIES: u32 = 3;
const SEND_PAUSE: Duration = Duration::from_millis(1);

pub(super) struct DatagramSocket {
    fd: AsyncFd<std::net::UdpSocket>,
}

impl DatagramSocket {
    /// Must run inside the runtime, whose reactor the socket registers with.
    pub(super) fn bind(addr: SocketAddr) -> io::Result<DatagramSocket> {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        // Deprecated because an `AsRawFd` type may hand out another descriptor later, or
        // close its own; a `std::net::UdpSocket` owns its descriptor for its whole life, so
        // the registration stays valid (the replacement, `register_with_interest`, is
        // `unsafe` only to make callers promise exactly that).
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(socket, Interest::READABLE)?;
        Ok(DatagramSocket { fd })
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }

    pub(super) async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let mut ready = self.fd.readable().await?;
            if let Ok(received) = ready.try_io(|socket| socket.get_ref().recv_from(buf)) {
                return received;
            }
        }
    }

    pub(super) async fn send_to(&self, datagram: &[u8], peer: SocketAddr) -> io::Result<usize> {
        let mut tries = 1;
        loop {
            match self.fd.get_ref().send_to(datagram, peer) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < SEND_TRIES => {
                    tries += 1;
                    tokio::time::sleep(SEND_PAUSE).await;
                }
                sent => return sent,
            }
        }
    }
}

impl AsFd for DatagramSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}
