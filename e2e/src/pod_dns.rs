//! Name resolution as a Pod sees it: the `/etc/resolv.conf` and `/etc/hosts` the kubelet
//! writes into every container, and a cluster DNS server answering Service names the way
//! CoreDNS's `kubernetes` plugin does. Used to prove that a binary in an empty root resolves
//! names with nothing but those files (`tests/image.rs`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// `/etc/resolv.conf` of a Pod with `dnsPolicy: ClusterFirst`, as kubernetes
/// `pkg/kubelet/network/dns/dns.go` builds it: `GetPodDNS` puts the cluster DNS as the only
/// nameserver, `generateSearchesForDNSClusterFirst` the namespace's, the `svc` and the
/// cluster domain as search list, and `defaultDNSOptions` is `ndots:5`.
pub fn resolv_conf(namespace: &str, cluster_domain: &str, nameserver: Ipv4Addr) -> String {
    format!(
        "search {namespace}.svc.{cluster_domain} svc.{cluster_domain} {cluster_domain}\n\
         nameserver {nameserver}\n\
         options ndots:5\n"
    )
}

/// `/etc/hosts` of a Pod, as kubernetes `pkg/kubelet/kubelet_pods.go`
/// (`managedHostsFileContent`, `hostsEntriesFromHostAliases`) writes it: the loopback and
/// IPv6 lines, the Pod's IP with its hostname, then the Pod's `hostAliases`.
pub fn hosts_file(
    pod_ip: Ipv4Addr,
    hostname: &str,
    host_aliases: &[(Ipv4Addr, &[&str])],
) -> String {
    let mut text = format!(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n\
         {pod_ip}\t{hostname}\n"
    );
    if !host_aliases.is_empty() {
        text.push_str("\n# Entries added by HostAliases.\n");
        for (ip, names) in host_aliases {
            text.push_str(&format!("{ip}\t{}\n", names.join("\t")));
        }
    }
    text
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    #[error("DNS message too short or a name runs past its end")]
    Truncated,
    #[error("not a standard query (QR set or opcode {0})")]
    NotAQuery(u8),
    #[error("{0} questions; one is expected")]
    QuestionCount(u16),
    #[error("compressed or invalid label in a question")]
    BadLabel,
}

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const RCODE_NXDOMAIN: u16 = 3;
/// CoreDNS's `kubernetes` plugin answers with TTL 5 unless its `ttl` option says otherwise.
const TTL: u32 = 5;

/// The name and type a query asks for (name lower-cased, without the final dot) and where
/// its question ends.
fn question(query: &[u8]) -> Result<(String, u16, usize), DnsError> {
    if query.len() < 12 {
        return Err(DnsError::Truncated);
    }
    let flags = u16::from_be_bytes([query[2], query[3]]);
    let opcode = ((flags >> 11) & 0xf) as u8;
    if flags & 0x8000 != 0 || opcode != 0 {
        return Err(DnsError::NotAQuery(opcode));
    }
    let count = u16::from_be_bytes([query[4], query[5]]);
    if count != 1 {
        return Err(DnsError::QuestionCount(count));
    }
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let length = usize::from(*query.get(at).ok_or(DnsError::Truncated)?);
        if length == 0 {
            at += 1;
            break;
        }
        if length > 63 {
            return Err(DnsError::BadLabel);
        }
        let label = query
            .get(at + 1..at + 1 + length)
            .ok_or(DnsError::Truncated)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += 1 + length;
    }
    let fixed = query.get(at..at + 4).ok_or(DnsError::Truncated)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    Ok((labels.join("."), qtype, at + 4))
}

/// The answer to one query, as coredns `plugin/kubernetes/handler.go` (`ServeDNS`) gives it
/// for names in its zone: the Service's A record; NOERROR without answers (NODATA) for any
/// other type of a known name (an IPv4 Service has no AAAA); NXDOMAIN for a name with no
/// Service. Differences, on purpose: no SOA in the authority section of negative answers
/// (resolvers here do not need it for caching) and no forwarding of names outside the zone.
pub fn answer(query: &[u8], records: &BTreeMap<String, Ipv4Addr>) -> Result<Vec<u8>, DnsError> {
    let (name, qtype, end) = question(query)?;
    let flags = u16::from_be_bytes([query[2], query[3]]);
    // QR, AA and RA set as CoreDNS does (`m.Authoritative, m.RecursionAvailable = true`); RD echoed.
    let mut reply_flags = 0x8000 | 0x0400 | 0x0080 | (flags & 0x0100);
    let found = records.get(&name);
    let mut answers = Vec::new();
    match found {
        None => reply_flags |= RCODE_NXDOMAIN,
        Some(address) if qtype == TYPE_A => {
            // A pointer to the question's name (offset 12), type A, class IN, TTL, 4 bytes.
            answers.extend_from_slice(&[0xc0, 12]);
            answers.extend_from_slice(&TYPE_A.to_be_bytes());
            answers.extend_from_slice(&CLASS_IN.to_be_bytes());
            answers.extend_from_slice(&TTL.to_be_bytes());
            answers.extend_from_slice(&4u16.to_be_bytes());
            answers.extend_from_slice(&address.octets());
        }
        Some(_) => {}
    }
    let count = u16::from(!answers.is_empty());
    let mut reply = Vec::with_capacity(end + answers.len());
    reply.extend_from_slice(&query[..2]);
    reply.extend_from_slice(&reply_flags.to_be_bytes());
    reply.extend_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&count.to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(&query[12..end]);
    reply.extend_from_slice(&answers);
    Ok(reply)
}

/// A cluster DNS server on UDP port 53 of a loopback address (resolv.conf names no port),
/// answering from fixed records until dropped. Binding port 53 needs root.
pub struct ClusterDns {
    pub address: Ipv4Addr,
    queries: Arc<Mutex<Vec<(String, u16)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ClusterDns {
    /// Starts on the first free address of `127.53.x.y` (one per test process, so parallel
    /// runs do not meet).
    pub fn start(records: BTreeMap<String, Ipv4Addr>) -> std::io::Result<ClusterDns> {
        let pid = std::process::id();
        let mut last_error = None;
        for attempt in 0..32u32 {
            let seed = pid.wrapping_add(attempt * 7919);
            let address = Ipv4Addr::new(127, 53, (seed >> 8) as u8, (seed as u8).max(1));
            match UdpSocket::bind(SocketAddr::from((address, 53))) {
                Ok(socket) => return Ok(ClusterDns::serve(socket, address, records)),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    fn serve(socket: UdpSocket, address: Ipv4Addr, records: BTreeMap<String, Ipv4Addr>) -> Self {
        let queries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let thread = {
            let (queries, stop) = (queries.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buffer = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((length, peer)) = socket.recv_from(&mut buffer) else {
                        continue;
                    };
                    let query = &buffer[..length];
                    if let Ok((name, qtype, _)) = question(query) {
                        queries.lock().unwrap().push((name, qtype));
                    }
                    match answer(query, &records) {
                        Ok(reply) => {
                            let _ = socket.send_to(&reply, peer);
                        }
                        Err(error) => {
                            eprintln!("cluster DNS: dropped a query from {peer}: {error}")
                        }
                    }
                }
            })
        };
        ClusterDns {
            address,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    /// Every (name, type) asked so far, in order.
    pub fn queries(&self) -> Vec<(String, u16)> {
        self.queries.lock().unwrap().clone()
    }
}

impl Drop for ClusterDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as glibc's resolver sends it: id, RD set, one question.
    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut message = id.to_be_bytes().to_vec();
        message.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            message.push(label.len() as u8);
            message.extend_from_slice(label.as_bytes());
        }
        message.push(0);
        message.extend_from_slice(&qtype.to_be_bytes());
        message.extend_from_slice(&CLASS_IN.to_be_bytes());
        message
    }

    fn records() -> BTreeMap<String, Ipv4Addr> {
        BTreeMap::from([(
            "receiver.monitoring.svc.cluster.local".to_owned(),
            Ipv4Addr::new(10, 96, 3, 4),
        )])
    }

    #[test]
    fn a_known_service_gets_its_address() {
        let reply = answer(
            &query(0x1234, "Receiver.Monitoring.svc.cluster.local", 1),
            &records(),
        )
        .unwrap();
        assert_eq!(&reply[..2], &[0x12, 0x34], "same id");
        assert_eq!(
            u16::from_be_bytes([reply[2], reply[3]]),
            0x8580,
            "QR AA RD RA, NOERROR"
        );
        assert_eq!(&reply[6..8], &[0, 1], "one answer");
        assert_eq!(&reply[reply.len() - 4..], &[10, 96, 3, 4]);
        assert_eq!(
            &reply[reply.len() - 10..reply.len() - 6],
            &TTL.to_be_bytes()
        );
    }

    #[test]
    fn other_types_of_a_known_name_are_nodata_and_unknown_names_nxdomain() {
        let aaaa = answer(
            &query(1, "receiver.monitoring.svc.cluster.local", 28),
            &records(),
        )
        .unwrap();
        assert_eq!(aaaa[3] & 0x0f, 0, "NOERROR");
        assert_eq!(&aaaa[6..8], &[0, 0], "no answer");
        // What glibc asks first for `receiver.monitoring.svc` with ndots:5: the first search domain.
        let searched = query(2, "receiver.monitoring.svc.default.svc.cluster.local", 1);
        let reply = answer(&searched, &records()).unwrap();
        assert_eq!(reply[3] & 0x0f, 3, "NXDOMAIN");
        assert_eq!(&reply[12..], &searched[12..], "the question is echoed");
    }

    #[test]
    fn malformed_queries_are_refused() {
        let good = query(1, "a.b", 1);
        assert_eq!(answer(&good[..8], &records()), Err(DnsError::Truncated));
        assert_eq!(
            answer(&good[..good.len() - 2], &records()),
            Err(DnsError::Truncated)
        );
        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(answer(&response, &records()), Err(DnsError::NotAQuery(0)));
        let mut two = good.clone();
        two[5] = 2;
        assert_eq!(answer(&two, &records()), Err(DnsError::QuestionCount(2)));
        let mut pointer = good;
        pointer[12] = 0xc0;
        assert_eq!(answer(&pointer, &records()), Err(DnsError::BadLabel));
    }

    #[test]
    fn pod_files_look_like_the_kubelet_s() {
        let resolv = resolv_conf("default", "cluster.local", Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(
            resolv,
            "search default.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.96.0.10\noptions ndots:5\n"
        );
        let hosts = hosts_file(
            Ipv4Addr::new(10, 244, 1, 5),
            "virt-launcher-vm-x",
            &[(Ipv4Addr::new(10, 1, 2, 3), &["foo.remote", "bar.remote"])],
        );
        assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(hosts.contains("10.244.1.5\tvirt-launcher-vm-x\n"));
        assert!(
            hosts.ends_with("# Entries added by HostAliases.\n10.1.2.3\tfoo.remote\tbar.remote\n")
        );
    }
}
