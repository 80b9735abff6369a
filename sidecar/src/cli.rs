//! Command line of the `kubevirt-bmc` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::bmc::{self, BmcConfig};
use crate::credentials::Credentials;
use crate::machine::simulated::{SimulatedConfig, SimulatedMachine};
use kubevirt_bmc_contract::annotations::IpmiAuth;
use kubevirt_bmc_contract::egress::{Cidr, EgressPolicy};
use kubevirt_bmc_runtime::exit::shutdown_signal;
use kubevirt_bmc_runtime::telemetry::LogArgs;
use kubevirt_bmc_runtime::tls::{Identity, TlsError};

#[derive(Debug, Parser)]
#[command(
    name = "kubevirt-bmc",
    version,
    about = "A BMC (IPMI and Redfish) for a KubeVirt virtual machine"
)]
pub struct Args {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one BMC for one simulated VM on this machine (no cluster needed).
    Simulate(SimulateArgs),
    /// Run in a virt-launcher Pod as the BMC of its KubeVirt VM.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// UDP address of the IPMI server.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_IPMI_LISTEN",
        default_value = "127.0.0.1:6230"
    )]
    pub ipmi_listen: SocketAddr,
    /// TCP address of the Redfish HTTPS server.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_REDFISH_LISTEN",
        default_value = "127.0.0.1:8443"
    )]
    pub redfish_listen: SocketAddr,
    /// BMC user name.
    #[arg(long, env = "KUBEVIRT_BMC_USERNAME", default_value = "admin")]
    pub username: String,
    /// BMC password. The default is for local use only.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_PASSWORD",
        default_value = "password",
        hide_default_value = true
    )]
    pub password: String,
    /// PEM certificate for Redfish; a self-signed one is made at start when absent.
    #[arg(long, env = "KUBEVIRT_BMC_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "KUBEVIRT_BMC_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Keep the simulated VM's state in this JSON file so a restart loses nothing.
    #[arg(long, env = "KUBEVIRT_BMC_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    /// Name of the simulated VM (the Redfish System Id).
    #[arg(long, env = "KUBEVIRT_BMC_VM_NAME", default_value = "sim-vm")]
    pub name: String,
    /// Firmware UUID of the simulated VM; random (and kept in the state file) when absent.
    #[arg(long, env = "KUBEVIRT_BMC_VM_UUID")]
    pub uuid: Option<String>,
    /// How long power on, graceful shutdown, reset and cycle take, in milliseconds.
    #[arg(long, env = "KUBEVIRT_BMC_POWER_TRANSITION_MS", default_value_t = 300)]
    pub power_transition_ms: u64,
    #[command(flatten)]
    pub ipmi: IpmiLimits,
    #[command(flatten)]
    pub redfish: RedfishLimits,
}

/// Redfish and egress flags shared by `simulate` and `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct RedfishLimits {
    /// Ranges event destinations and media images may reach although refused by default
    /// (loopback, link-local, ...), comma-separated CIDRs. Against `--egress-deny` the more
    /// specific range wins, deny on a tie.
    #[arg(long, env = kubevirt_bmc_contract::egress::ALLOW_ENV, value_delimiter = ',', value_parser = parse_cidr)]
    pub egress_allow: Vec<Cidr>,
    /// Ranges event destinations and media images may never reach (in a cluster: its
    /// service and pod ranges), comma-separated CIDRs.
    #[arg(long, env = kubevirt_bmc_contract::egress::DENY_ENV, value_delimiter = ',', value_parser = parse_cidr)]
    pub egress_deny: Vec<Cidr>,
    /// Seconds a Redfish connection may stay without traffic while no request runs.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_REDFISH_IDLE_TIMEOUT",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub redfish_idle_timeout: u64,
    /// Redfish connections open at once; one more is closed when accepted.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_REDFISH_MAX_CONNECTIONS",
        default_value_t = 256,
        value_parser = clap::value_parser!(u16).range(1..=4096)
    )]
    pub redfish_max_connections: u16,
}

fn parse_cidr(text: &str) -> Result<Cidr, String> {
    text.parse()
        .map_err(|e: kubevirt_bmc_contract::egress::EgressError| e.to_string())
}

impl RedfishLimits {
    pub fn options(&self) -> crate::redfish::Options {
        crate::redfish::Options {
            egress: Arc::new(EgressPolicy::new(
                self.egress_allow.clone(),
                self.egress_deny.clone(),
            )),
            idle_timeout: Duration::from_secs(self.redfish_idle_timeout),
            max_connections: self.redfish_max_connections.into(),
            ipmi_listen: None,
            redfish_listen: None,
        }
    }
}

/// IPMI flags shared by `simulate` and `serve`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct IpmiLimits {
    /// Concurrent IPMI sessions, 1 to 1024. Session handles are 8 bits: Get Session Info
    /// reports handle 0 for sessions past the 255th and addresses only the first 255.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_IPMI_MAX_SESSIONS",
        default_value_t = 32,
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    pub ipmi_max_sessions: u16,
    /// Which IPMI logins are accepted: `strict` (RMCP+ with cipher suites 3 and 17 only) or
    /// `compatible` (also IPMI v1.5 MD5/straight password and suites 1 and 2). `serve` takes
    /// the VM's `bmc.kubevirt.io/ipmi-auth` annotation over this when it has one.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_IPMI_AUTH",
        default_value = "strict",
        value_parser = parse_ipmi_auth
    )]
    pub ipmi_auth: IpmiAuth,
}

fn parse_ipmi_auth(text: &str) -> Result<IpmiAuth, String> {
    IpmiAuth::parse(text).map_err(|_| "allowed values are strict and compatible".to_owned())
}

pub use crate::serve::ServeArgs;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Simulated(#[from] crate::machine::simulated::SimulatedError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
    #[error(transparent)]
    Bmc(#[from] bmc::BmcError),
}

impl Args {
    pub async fn run(self) -> Result<(), CliError> {
        match self.command {
            Command::Simulate(args) => args.run().await,
            Command::Serve(args) => args.run().await,
        }
    }
}

impl SimulateArgs {
    pub async fn run(self) -> Result<(), CliError> {
        let machine: Arc<dyn crate::machine::Machine> =
            Arc::new(SimulatedMachine::new(SimulatedConfig {
                name: self.name.clone(),
                uuid: self.uuid.clone(),
                transition: Duration::from_millis(self.power_transition_ms),
                state_file: self.state_file.clone(),
            })?);
        let credentials = Credentials::new(self.username.clone(), self.password.clone());
        if self.password == "password" {
            tracing::warn!("using the default password: for local use only");
        }
        let names = vec!["localhost".to_owned(), self.redfish_listen.ip().to_string()];
        let identity = Identity::load_or_self_signed(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            &names,
        )?;
        let tls = axum_server::tls_rustls::RustlsConfig::from_config(identity.server_config()?);
        tracing::info!(vm = %self.name, "simulated machine ready");
        print_how_to_reach(&self, &credentials);
        let config = BmcConfig {
            ipmi_listen: self.ipmi_listen,
            redfish_listen: self.redfish_listen,
            ipmi_max_sessions: self.ipmi.ipmi_max_sessions.into(),
            ipmi_auth: self.ipmi.ipmi_auth,
            credentials,
            tls,
            redfish: self.redfish.options(),
        };
        bmc::run(machine, config, shutdown_signal()).await?;
        Ok(())
    }
}

fn print_how_to_reach(args: &SimulateArgs, credentials: &Credentials) {
    let ipmi = args.ipmi_listen;
    let redfish = args.redfish_listen;
    let user = &credentials.username;
    println!("kubevirt-bmc simulating VM {:?}", args.name);
    println!(
        "  ipmitool -I lanplus -H {} -p {} -U {user} -P '<password>' power status",
        ipmi.ip(),
        ipmi.port()
    );
    println!(
        "  curl -k -u {user}:'<password>' https://{redfish}/redfish/v1/Systems/{}",
        args.name
    );
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Args, Command};

    fn max_sessions(extra: &[&str]) -> Result<u16, clap::Error> {
        let args = Args::try_parse_from([&["kubevirt-bmc", "simulate"], extra].concat())?;
        match args.command {
            Command::Simulate(s) => Ok(s.ipmi.ipmi_max_sessions),
            Command::Serve(_) => unreachable!("simulate parsed"),
        }
    }

    #[test]
    fn ipmi_max_sessions_defaults_to_32_and_accepts_1_to_1024() {
        assert_eq!(max_sessions(&[]).unwrap(), 32);
        assert_eq!(max_sessions(&["--ipmi-max-sessions", "1"]).unwrap(), 1);
        assert_eq!(
            max_sessions(&["--ipmi-max-sessions", "1024"]).unwrap(),
            1024
        );
        for bad in ["0", "1025", "-1", "many"] {
            let flag = format!("--ipmi-max-sessions={bad}");
            let error = max_sessions(&[&flag]).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad}"
            );
            assert!(error.to_string().contains("--ipmi-max-sessions"), "{error}");
        }
        let error = max_sessions(&["--ipmi-max-sessions", "2000"]).unwrap_err();
        assert!(error.to_string().contains("1..=1024"), "{error}");
    }

    #[test]
    fn serve_takes_ipmi_max_sessions_too() {
        let args = Args::try_parse_from([
            "kubevirt-bmc",
            "serve",
            "--namespace",
            "ns",
            "--vm-name",
            "vm",
            "--ipmi-max-sessions",
            "64",
        ])
        .unwrap();
        let Command::Serve(serve) = args.command else {
            panic!("serve parsed")
        };
        assert_eq!(serve.ipmi.ipmi_max_sessions, 64);
        assert!(serve.redfish.egress_allow.is_empty());
        assert_eq!(serve.redfish.redfish_idle_timeout, 60);
    }

    #[test]
    fn egress_ranges_are_comma_separated_cidrs() {
        let args = Args::try_parse_from([
            "kubevirt-bmc",
            "simulate",
            "--egress-allow",
            "127.0.0.0/8,::1",
            "--egress-deny=10.96.0.0/12",
        ])
        .unwrap();
        let Command::Simulate(simulate) = args.command else {
            panic!("simulate parsed")
        };
        let policy = simulate.redfish.options().egress;
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("10.96.0.1".parse().unwrap()).is_err());
        let error =
            Args::try_parse_from(["kubevirt-bmc", "simulate", "--egress-deny", "10.0.0.0/40"])
                .unwrap_err();
        assert!(error.to_string().contains("not a CIDR range"), "{error}");
    }
}
