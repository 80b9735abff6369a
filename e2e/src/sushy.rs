//! sushy, Ironic's Redfish library, as one long-lived Python process the test sends commands
//! to (`e2e/tests/python/sushy_driver.py`): one client for the whole scenario, as an Ironic
//! conductor keeps one per node.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum SushyError {
    #[error("no Python venv at {0}: run e2e/setup.sh (or set KUBEVIRT_BMC_VENV)")]
    NoVenv(PathBuf),
    #[error("cannot run the sushy driver: {0}")]
    Io(#[from] std::io::Error),
    #[error("the sushy driver ended without answering {0}")]
    Ended(String),
    #[error("the sushy driver answered something that is not JSON: {0}")]
    Garbled(String),
}

pub struct Sushy {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// The test venv: `KUBEVIRT_BMC_VENV`, else `<workspace>/target/venv`.
pub fn venv() -> PathBuf {
    std::env::var_os("KUBEVIRT_BMC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv"))
}

impl Sushy {
    /// Starts the driver against `url` (https://host:port) for system `vm`.
    pub fn start(url: &str, user: &str, password: &str, vm: &str) -> Result<Sushy, SushyError> {
        let python = venv().join("bin/python");
        if !python.exists() {
            return Err(SushyError::NoVenv(venv()));
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sushy_driver.py");
        let mut child = Command::new(python)
            .arg(script)
            .args([url, user, password, vm])
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Sushy {
            child,
            stdin,
            stdout,
        })
    }

    /// Sends one command; the driver's answer, `Err(message)` when sushy raised. Blocking:
    /// call it from `tokio::task::block_in_place` in async tests.
    pub fn call(&mut self, command: Value) -> Result<Result<Value, String>, SushyError> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(SushyError::Ended(command.to_string()));
        }
        let answer: Value =
            serde_json::from_str(&line).map_err(|_| SushyError::Garbled(line.clone()))?;
        Ok(if answer["ok"] == true {
            Ok(answer)
        } else {
            Err(answer["error"]
                .as_str()
                .unwrap_or("(no message)")
                .to_owned())
        })
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
