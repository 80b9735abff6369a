//! Shared pieces of the comparison-table command (`e2e/bench.sh`) and the load command
//! (`e2e/load.sh`): starting the BMCs under test, the clients that drive them, and the
//! measurements. Both commands are binaries of this crate (`src/bin/`), never timed tests.

pub mod cpu;
pub mod https;
pub mod ipmi;
pub mod pki;
pub mod procs;
pub mod stats;
pub mod wrk;

use std::path::PathBuf;

/// What went wrong while starting a process or driving a client.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} did not start: {reason}")]
    Start { what: String, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("IPMI: no answer after {attempts} attempt(s)")]
    IpmiTimeout { attempts: u32 },
    #[error("IPMI: {0}")]
    Ipmi(String),
    #[error("wrk: {0}")]
    Wrk(String),
}

impl BenchError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }

    /// A short name of the kind of error, for counting errors by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            BenchError::Io { .. } => "I/O",
            BenchError::Start { .. } => "start",
            BenchError::Tls(_) => "TLS",
            BenchError::Http(_) => "HTTP connection",
            BenchError::IpmiTimeout { .. } => "IPMI timeout",
            BenchError::Ipmi(_) => "IPMI protocol",
            BenchError::Wrk(_) => "wrk",
        }
    }
}

/// The repository's top directory (this crate is `e2e/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// The directory of the running binary: the bench binaries sit next to the BMC and webhook
/// binaries built by the same `cargo build --release`.
pub fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(|| repo_root().join("target/release"))
}
