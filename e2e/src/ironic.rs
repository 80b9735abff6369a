//! OpenStack Ironic itself, standalone in one process (`ironic`, the API embedded in the
//! conductor: `ironic/command/singleprocess.py`), installed from PyPI into the test venv
//! (`e2e/requirements.txt`, every dependency pinned in `e2e/constraints.txt`). No Keystone,
//! no message bus, no Neutron: sqlite, `auth_strategy = noauth`, `rpc_transport = none`,
//! `network_interface = noop`, automated cleaning off, the API on loopback.
//!
//! Sensor data reaches the test the way it leaves a real conductor: as the periodic
//! `hardware.<driver>.metrics` notification (`ConductorManager._send_sensor_data`), here
//! with oslo.messaging's `log` notification driver, so it is read from Ironic's log.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum IronicError {
    #[error("Ironic is not installed in {0}: run e2e/setup.sh (or set KUBEVIRT_BMC_VENV)")]
    NotInstalled(PathBuf),
    #[error("cannot run Ironic: {0}")]
    Io(#[from] std::io::Error),
    #[error("ironic-dbsync failed: {0}")]
    Schema(String),
    #[error("Ironic's API did not answer within {0:?}; its log:\n{1}")]
    NeverAnswered(Duration, String),
    #[error("Ironic exited before its API answered; its log:\n{0}")]
    Exited(String),
    #[error("Ironic answered something that is not HTTP: {0}")]
    Garbled(String),
}

/// The newest API version this Ironic speaks; requests ask for it.
pub const API_VERSION: &str = "latest";

/// The configuration file: every option a standalone Ironic without other OpenStack
/// services needs, and the interfaces the test drives. Pure, so it is tested alone.
pub fn config(dir: &Path, api_port: u16, http_url: &str) -> String {
    let d = dir.display();
    format!(
        "[DEFAULT]
auth_strategy = noauth
rpc_transport = none
host = kubevirt-bmc-e2e
enabled_hardware_types = ipmi,redfish
enabled_power_interfaces = ipmitool,redfish
enabled_management_interfaces = ipmitool,redfish
enabled_boot_interfaces = pxe,redfish-virtual-media
enabled_deploy_interfaces = ramdisk
enabled_inspect_interfaces = redfish,no-inspect
enabled_bios_interfaces = redfish,no-bios
enabled_firmware_interfaces = redfish,no-firmware
enabled_vendor_interfaces = ipmitool,redfish,no-vendor
enabled_console_interfaces = ipmitool-socat,no-console
enabled_network_interfaces = noop
default_network_interface = noop
enabled_raid_interfaces = no-raid
enabled_rescue_interfaces = no-rescue
enabled_storage_interfaces = noop
state_path = {d}/state
log_file = {d}/ironic.log
use_stderr = false
debug = false
[api]
host_ip = 127.0.0.1
port = {api_port}
[database]
connection = sqlite:///{d}/ironic.sqlite
[conductor]
automated_clean = false
# The test sets power itself; a sync that \"corrects\" the machine would race it.
force_power_state_during_sync = false
# Ironic's default of 5 s between two ipmitool runs protects fragile BMCs; ours is not, and
# the default would make every IPMI check take 15 s.
[ipmi]
min_command_interval = 1
[dhcp]
dhcp_provider = none
# The ipmitool-socat console (ironic/drivers/modules/console_utils.py start_socat_console):
# socat listens on loopback, not on $my_ip; its pid file where the test can read it.
[console]
socat_address = 127.0.0.1
terminal_pid_dir = {d}/console
[deploy]
default_boot_mode = uefi
http_root = {d}/http
http_url = {http_url}
iso_master_path = {d}/master_iso_images
[pxe]
tftp_root = {d}/tftp
tftp_master_path = {d}/tftp/master
images_path = {d}/images
instance_master_path = {d}/master
[oslo_messaging_notifications]
driver = log
# `manage` then runs the verify step that compares the BMC's clock with Ironic's
# (`RedfishManagement.verify_bmc_clock`), as Metal3 enables it.
[redfish]
enable_verify_bmc_clock = true
[sensor_data]
send_sensor_data = true
interval = 5
enable_for_undeployed_nodes = true
enable_for_conductor = false
"
    )
}

/// The lines of Ironic's log at WARNING or above (oslo.log's `<date> <time> <pid> LEVEL
/// logger ...`), with the continuation lines of tracebacks joined to them.
pub fn problems(log: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_problem = false;
    for line in log.lines() {
        let level = line.split_whitespace().nth(3);
        let is_record = line.len() > 24 && line.as_bytes()[4] == b'-' && level.is_some();
        if is_record {
            in_problem = matches!(level, Some("WARNING" | "ERROR" | "CRITICAL"));
            if in_problem {
                out.push(line.to_owned());
            }
        } else if in_problem && let Some(last) = out.last_mut() {
            last.push('\n');
            last.push_str(line);
        }
    }
    out
}

/// The payloads of the `hardware.<driver>.metrics.update` notifications the `log`
/// notification driver wrote (oslo_messaging/notify/_impl_log.py: the whole message as
/// JSON on one line, logger `oslo.messaging.notification.<event_type>`).
pub fn sensor_notifications(log: &str, driver: &str) -> Vec<Value> {
    let logger = format!("oslo.messaging.notification.hardware.{driver}.metrics");
    log.lines()
        .filter(|line| line.contains(&logger))
        .filter_map(|line| line.find('{').map(|start| &line[start..]))
        .filter_map(|json| serde_json::from_str::<Value>(json).ok())
        .collect()
}

/// A running Ironic, stopped on drop.
pub struct Ironic {
    child: Child,
    pub api: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Ironic {
    /// Creates the database and starts Ironic from `venv`; returns once its API answers.
    /// `http_url` is where the BMC fetches the images Ironic publishes (its `[deploy] http_url`;
    /// the test serves it).
    pub fn start(venv: &Path, api_port: u16, http_url: &str) -> Result<Ironic, IronicError> {
        let bin = venv.join("bin");
        if !bin.join("ironic").exists() {
            return Err(IronicError::NotInstalled(venv.to_owned()));
        }
        let dir = tempfile::tempdir()?;
        for sub in ["state", "http", "tftp/master", "images", "master"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        let conf = dir.path().join("ironic.conf");
        std::fs::write(&conf, config(dir.path(), api_port, http_url))?;
        let schema = Command::new(bin.join("ironic-dbsync"))
            .arg("--config-file")
            .arg(&conf)
            .arg("create_schema")
            .output()?;
        if !schema.status.success() {
            return Err(IronicError::Schema(
                String::from_utf8_lossy(&schema.stderr).into_owned(),
            ));
        }
        // ipmitool, socat: Ironic runs them from PATH, the venv's tools first.
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // Its own process group: `ironic` forks a worker (oslo.service), and stopping the
        // test must stop both.
        let child = Command::new(bin.join("ironic"))
            .process_group(0)
            .arg("--config-file")
            .arg(&conf)
            .env("PATH", path)
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut ironic = Ironic {
            child,
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            dir,
        };
        let wait = Duration::from_secs(180);
        let start = Instant::now();
        loop {
            if let Ok(Some(_)) = ironic.child.try_wait() {
                return Err(IronicError::Exited(ironic.log()));
            }
            if let Ok((200, _)) = ironic.request("GET", "/v1/drivers", None) {
                return Ok(ironic);
            }
            if start.elapsed() > wait {
                return Err(IronicError::NeverAnswered(wait, ironic.log()));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("ironic.log")
    }

    /// Where the ipmitool-socat console keeps socat's pid (`[console] terminal_pid_dir`,
    /// one `<node uuid>.pid` each, as console_utils `_get_console_pid_file` names it).
    pub fn console_pid_file(&self, node_uuid: &str) -> PathBuf {
        self.dir
            .path()
            .join("console")
            .join(format!("{node_uuid}.pid"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// One REST call: (status, JSON body or Null). Blocking HTTP/1.1, one connection per
    /// call, as the test needs no more.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), IronicError> {
        let mut stream = TcpStream::connect(self.api)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let payload = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\
             X-OpenStack-Ironic-API-Version: {API_VERSION}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            self.api,
            payload.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        parse_response(&raw)
    }
}

impl Drop for Ironic {
    fn drop(&mut self) {
        // The whole group (the launcher and its worker); no `unsafe` signal call needed.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status and JSON body of a whole HTTP/1.1 response (plain or chunked).
pub fn parse_response(raw: &[u8]) -> Result<(u16, Value), IronicError> {
    let text = String::from_utf8_lossy(raw);
    let garbled = || IronicError::Garbled(text.chars().take(200).collect());
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(garbled)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(garbled)?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body).ok_or_else(garbled)?
    } else {
        body.to_owned()
    };
    let json = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    };
    Ok((status, json))
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_warnings_and_errors_with_their_tracebacks() {
        let log = "2026-12-01 21:35:42.059 10816 INFO ironic.x [-] fine\n\
                   2026-12-01 21:35:42.060 10816 WARNING ironic.y [-] careful\n\
                   2026-12-01 21:35:42.061 10816 ERROR ironic.z [-] broken\n\
                   Traceback (most recent call last):\n  File \"x\"\n\
                   2026-12-01 21:35:42.062 10816 INFO ironic.x [-] fine again\n";
        let found = problems(log);
        assert_eq!(found.len(), 2);
        assert!(found[0].ends_with("careful"));
        assert!(found[1].contains("broken\nTraceback"));
    }

    #[test]
    fn sensor_notifications_are_read_from_the_log_driver_lines() {
        let log = "2026-12-01 21:35:42.059 1 INFO oslo.messaging.notification.hardware.ipmi.metrics [-] \
                   {\"event_type\": \"hardware.ipmi.metrics\", \"payload\": {\"payload\": {\"Temperature\": {}}}}\n\
                   2026-12-01 21:35:42.059 1 INFO oslo.messaging.notification.hardware.redfish.metrics [-] {}\n";
        let found = sensor_notifications(log, "ipmi");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["event_type"], "hardware.ipmi.metrics");
    }

    #[test]
    fn responses_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"a\": 1}";
        assert_eq!(
            parse_response(plain).unwrap(),
            (200, serde_json::json!({"a": 1}))
        );
        let chunked = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n5\r\n\": 2}\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (202, serde_json::json!({"a": 2}))
        );
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(empty).unwrap(), (204, Value::Null));
        assert!(parse_response(b"nonsense").is_err());
    }

    #[test]
    fn config_names_the_standalone_choices() {
        let text = config(Path::new("/d"), 6385, "http://127.0.0.1:1");
        for line in [
            "auth_strategy = noauth",
            "rpc_transport = none",
            "default_network_interface = noop",
            "automated_clean = false",
            "port = 6385",
            "connection = sqlite:////d/ironic.sqlite",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing");
        }
    }
}
