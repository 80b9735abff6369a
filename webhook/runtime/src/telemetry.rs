//! Logging set-up shared by both binaries: text or JSON on stderr, an EnvFilter from a flag.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log output format.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,kubevirt_bmc=debug`).
    #[arg(long, env = "KUBEVIRT_BMC_LOG", default_value = "info", global = true)]
    pub log_level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

impl LogArgs {
    /// Logs go to stderr so stdout stays for what a user is told to run.
    pub fn init(&self) -> Result<(), TelemetryError> {
        let filter = EnvFilter::try_new(&self.log_level).map_err(|e| TelemetryError::Filter {
            filter: self.log_level.clone(),
            reason: e.to_string(),
        })?;
        // Colour codes only for a person at a terminal: in a Pod's log, a file or a pipe
        // they are noise to read and to grep, and cost a formatting pass per line.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        let installed = match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
        installed.map_err(|_| TelemetryError::AlreadyInstalled)
    }
}
