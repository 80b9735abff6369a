//! `kubevirt-bmc serve`: the BMC of one KubeVirt VM, run in its virt-launcher Pod. The flags
//! and their environment variables are the contract with the webhook that injects the
//! sidecar (see the README).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::bmc::{self, BmcConfig};
use kubevirt_bmc_runtime::exit::shutdown_signal;

use crate::cli::CliError;
use crate::credentials::Credentials;
use crate::health::{self, HealthState};
use crate::machine::kubevirt::{KubevirtConfig, KubevirtMachine};
use kubevirt_bmc_runtime::tls::Identity;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Namespace of the VM (downward API: metadata.namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Name of the VM (downward API: the Pod's `kubevirt.io/domain` annotation).
    #[arg(long, env = "VM_NAME")]
    pub vm_name: String,
    /// Name of this Pod, for logs.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Address IPMI and Redfish listen on (downward API: status.podIP).
    #[arg(long, env = "POD_IP", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub pod_ip: IpAddr,
    /// UDP port of IPMI (RMCP/RMCP+).
    #[arg(long, env = "KUBEVIRT_BMC_IPMI_PORT", default_value_t = kubevirt_bmc_contract::names::IPMI_PORT)]
    pub ipmi_port: u16,
    /// TCP port of Redfish (HTTPS).
    #[arg(long, env = "KUBEVIRT_BMC_REDFISH_PORT", default_value_t = kubevirt_bmc_contract::names::REDFISH_PORT)]
    pub redfish_port: u16,
    /// Plain-HTTP address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_HEALTH_LISTEN",
        default_value = "0.0.0.0:8623"
    )]
    pub health_listen: SocketAddr,
    /// The mounted credentials Secret: files `username`, `password`, optional `session-key`.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_CREDENTIALS_DIR",
        default_value = kubevirt_bmc_contract::names::CREDENTIALS_MOUNT
    )]
    pub credentials_dir: PathBuf,
    /// A kubeconfig to use instead of the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// PEM certificate for Redfish; self-signed for the Pod IP when absent.
    #[arg(long, env = "KUBEVIRT_BMC_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "KUBEVIRT_BMC_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub ipmi: crate::cli::IpmiLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read the BMC credentials {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
    #[error("cannot set up the Kubernetes client: {0}")]
    Kube(String),
    #[error(transparent)]
    Health(#[from] health::HealthError),
}

fn read_secret_file(dir: &Path, key: &str) -> Result<String, ServeError> {
    let path = dir.join(key);
    let text = std::fs::read_to_string(&path).map_err(|e| ServeError::Credentials {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let value = text.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        return Err(ServeError::Credentials {
            path,
            reason: "the file is empty".into(),
        });
    }
    Ok(value)
}

impl ServeArgs {
    async fn kube_client(&self) -> Result<kube::Client, ServeError> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| ServeError::Kube(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|e| ServeError::Kube(format!("{}: {e}", path.display())))?
            }
            // Re-reads the projected token when it rotates.
            None => kube::Config::incluster().map_err(|e| ServeError::Kube(e.to_string()))?,
        };
        kube::Client::try_from(config).map_err(|e| ServeError::Kube(e.to_string()))
    }

    pub async fn run(self) -> Result<(), CliError> {
        let dir = &self.credentials_dir;
        let credentials = Credentials::new(
            read_secret_file(dir, "username")?,
            read_secret_file(dir, "password")?,
        );
        let client = self.kube_client().await?;
        let machine = Arc::new(KubevirtMachine::start(
            client,
            KubevirtConfig {
                namespace: self.namespace.clone(),
                vm_name: self.vm_name.clone(),
                credentials_dir: Some(dir.clone()),
            },
        ));
        let names = vec!["localhost".to_owned(), self.pod_ip.to_string()];
        let identity = Identity::load_or_self_signed(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            &names,
        )?;
        let tls = identity.server_config()?;
        let ipmi_listen = SocketAddr::new(self.pod_ip, self.ipmi_port);
        let redfish_listen = SocketAddr::new(self.pod_ip, self.redfish_port);

        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.send_replace(true);
        });
        let until_stopped = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        let metrics_machine = machine.clone();
        let health_state = Arc::new(HealthState {
            redfish: redfish_listen,
            metrics: Box::new(move || metrics_machine.metrics_text()),
            ready: AtomicBool::new(false),
        });
        let health = health::bind(self.health_listen, health_state, until_stopped())
            .await
            .map_err(ServeError::from)?;
        let health = tokio::spawn(health);
        tracing::info!(
            vm = %self.vm_name,
            namespace = %self.namespace,
            pod = self.pod_name.as_deref().unwrap_or("-"),
            %ipmi_listen,
            %redfish_listen,
            "serving the BMC of a KubeVirt VM"
        );
        let config = BmcConfig {
            ipmi_listen,
            redfish_listen,
            ipmi_max_sessions: self.ipmi.ipmi_max_sessions.into(),
            credentials,
            tls,
        };
        bmc::run(machine, config, until_stopped()).await?;
        if let Ok(Err(error)) = health.await {
            tracing::warn!(%error, "health server ended with an error");
        }
        Ok(())
    }
}
