//! The processes under test: start, wait until they listen, measure, stop. Also what the
//! report says about the machine and the kernel's datagram counters.

use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::BenchError;

/// A child process killed when dropped, so a failed run leaves nothing behind.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Starts `command` with its output discarded (the servers log per request or session).
    pub fn spawn(name: &str, mut command: Command) -> Result<Proc, BenchError> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::Start {
                what: name.to_owned(),
                reason: format!("{e} ({:?})", command.get_program()),
            })?;
        Ok(Proc {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in KiB (VmRSS of /proc/PID/status).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }

    /// Fails when the process has exited (a crash under load must not read as a result).
    pub fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(BenchError::Start {
                what: self.name.clone(),
                reason: format!("exited: {status}"),
            }),
            Err(e) => Err(BenchError::io(format!("waiting for {}", self.name))(e)),
        }
    }

    /// Waits until the process accepts TCP connections on `port`.
    pub fn wait_tcp(&mut self, port: u16) -> Result<(), BenchError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(BenchError::Start {
                    what: self.name.clone(),
                    reason: format!("nothing listens on 127.0.0.1:{port} after 30 s"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn free_udp_port() -> Result<u16, BenchError> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(BenchError::io("picking a free UDP port"))
}

pub fn free_tcp_port() -> Result<u16, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(BenchError::io("picking a free TCP port"))
}

/// A binary built next to the bench binary, or a clear error naming the build command.
pub fn built_binary(dir: &Path, name: &str) -> Result<std::path::PathBuf, BenchError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(BenchError::Start {
            what: name.to_owned(),
            reason: format!(
                "{} is missing: cargo build --release -p kubevirt-bmc -p kubevirt-bmc-webhook -p kubevirt-bmc-e2e --bins",
                path.display()
            ),
        })
    }
}

/// The machine the numbers come from: cores, CPU model and load average now.
#[derive(Debug, Clone)]
pub struct MachineInfo {
    pub cores: usize,
    pub cpu_model: String,
    pub load_average: String,
}

impl MachineInfo {
    pub fn now() -> MachineInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
        MachineInfo {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            load_average: load_average(),
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Datagrams the kernel dropped on the UDP socket bound to `port` (the last column of
/// /proc/net/udp): a full receive buffer, i.e. the server not reading fast enough.
pub fn udp_socket_drops(port: u16) -> Option<u64> {
    let hex_port = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local = fields.get(1)?;
                    local
                        .ends_with(&hex_port)
                        .then(|| fields.last()?.parse::<u64>().ok())
                        .flatten()
                })
                .collect::<Vec<_>>()
        })
        .reduce(|a, b| a + b)
}

/// System-wide UDP counters (InDatagrams, RcvbufErrors) from /proc/net/snmp.
pub fn udp_counters() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some((get("InDatagrams")?, get("RcvbufErrors")?))
}

/// Command for `kubevirt-bmc simulate` on loopback with the bench's credentials and PKI.
pub fn simulate_command(
    binary: &Path,
    ipmi_port: u16,
    redfish_port: u16,
    password: &str,
    tls: &super::pki::Pki,
) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("simulate")
        .args(["--ipmi-listen", &format!("127.0.0.1:{ipmi_port}")])
        .args(["--redfish-listen", &format!("127.0.0.1:{redfish_port}")])
        .args(["--name", "bench-vm", "--username", "admin"])
        .args(["--password", password])
        .arg("--tls-cert")
        .arg(&tls.cert)
        .arg("--tls-key")
        .arg(&tls.key)
        .env("RUST_LOG", "warn");
    command
}
