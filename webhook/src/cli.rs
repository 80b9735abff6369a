//! Command line of the `kubevirt-bmc-webhook` binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser};
use kubevirt_bmc_runtime::telemetry::LogArgs;

use crate::inject::InjectionConfig;
use crate::metrics::Metrics;
use crate::server::{self, Context, ServeConfig, ServerError};
use kubevirt_bmc_runtime::tls_reload::CertFiles;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    // kube's own message already ends with its I/O cause; as `reason` (not a source)
    // the one-line error chain does not repeat it.
    #[error("cannot read kubeconfig {path}: {reason}")]
    Kubeconfig {
        path: PathBuf,
        reason: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration (in-cluster or kubeconfig)")]
    NoConfig(#[from] kube::config::InferConfigError),
    #[error("cannot build the Kubernetes client")]
    Client(#[from] kube::Error),
    #[error(transparent)]
    Server(#[from] ServerError),
}

#[derive(Debug, Parser)]
#[command(
    name = "kubevirt-bmc-webhook",
    version,
    about = "Gives opted-in KubeVirt VMs a BMC sidecar"
)]
pub struct Args {
    #[command(flatten)]
    pub log: LogArgs,
    /// HTTPS address the API server calls.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    pub listen: SocketAddr,
    /// PEM serving certificate (a cert-manager Secret volume in the cluster).
    #[arg(
        long,
        env = "KUBEVIRT_BMC_WEBHOOK_TLS_CERT",
        default_value = "/etc/kubevirt-bmc/tls/tls.crt"
    )]
    pub tls_cert: PathBuf,
    /// PEM private key of `--tls-cert`.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_WEBHOOK_TLS_KEY",
        default_value = "/etc/kubevirt-bmc/tls/tls.key"
    )]
    pub tls_key: PathBuf,
    /// How often the certificate files are re-read to follow a Secret rotation.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_WEBHOOK_TLS_RELOAD_SECONDS",
        default_value_t = 5
    )]
    pub tls_reload_seconds: u64,
    /// Kubeconfig to use; the in-cluster configuration or the default kubeconfig otherwise.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Run the admission webhook only (no VM controller, no API access needed).
    #[arg(long, env = "KUBEVIRT_BMC_WEBHOOK_NO_CONTROLLER")]
    pub no_controller: bool,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct SidecarArgs {
    /// Image of the injected `bmc` container. The manifests set it to the webhook's own image
    /// (kustomize copies the Deployment's image into this variable).
    #[arg(long = "sidecar-image", env = "KUBEVIRT_BMC_SIDECAR_IMAGE")]
    pub image: String,
    #[arg(
        long = "sidecar-image-pull-policy",
        env = "KUBEVIRT_BMC_SIDECAR_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent",
        value_parser = ["Always", "IfNotPresent", "Never"]
    )]
    pub image_pull_policy: String,
    /// CPU for the sidecar, used as both request and limit (guaranteed-QoS VMs require it).
    #[arg(
        long = "sidecar-cpu",
        env = "KUBEVIRT_BMC_SIDECAR_CPU",
        default_value = "50m"
    )]
    pub cpu: String,
    /// Memory for the sidecar, used as both request and limit.
    #[arg(
        long = "sidecar-memory",
        env = "KUBEVIRT_BMC_SIDECAR_MEMORY",
        default_value = "64Mi"
    )]
    pub memory: String,
    /// Add the `net.ipv4.ip_unprivileged_port_start=0` sysctl so the sidecar binds 623/443;
    /// `false` makes it listen on 10623/10443 (the Service still exposes 623/443).
    #[arg(
        long = "low-port-sysctl",
        env = "KUBEVIRT_BMC_LOW_PORT_SYSCTL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub low_port_sysctl: bool,
    /// Lifetime of the projected service-account token (the kubelet rotates it).
    #[arg(
        long = "sidecar-token-seconds",
        env = "KUBEVIRT_BMC_SIDECAR_TOKEN_SECONDS",
        default_value_t = 3607
    )]
    pub token_expiration_seconds: i64,
}

impl Args {
    /// Serves admission over HTTPS and, unless `--no-controller`, runs the VM controller,
    /// until SIGTERM or Ctrl-C.
    pub async fn run(self) -> Result<(), CliError> {
        let metrics = Arc::new(Metrics::default());
        let ctx = Arc::new(Context {
            injection: self.sidecar.injection_config(),
            metrics: metrics.clone(),
        });
        let config = ServeConfig {
            listen: self.listen,
            files: CertFiles {
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
            },
            reload_interval: Duration::from_secs(self.tls_reload_seconds.max(1)),
        };
        if !self.no_controller {
            let client = kube_client(self.kubeconfig.as_deref()).await?;
            // Events name the reporting instance: the webhook Pod in a cluster.
            let instance = std::env::var("POD_NAME").unwrap_or_else(|_| "local".to_owned());
            tokio::spawn(crate::controller::run::run(client, metrics, instance));
        }
        let handle = axum_server::Handle::new();
        let shutdown = handle.clone();
        tokio::spawn(async move {
            kubevirt_bmc_runtime::exit::shutdown_signal().await;
            shutdown.graceful_shutdown(Some(Duration::from_secs(10)));
        });
        server::serve(config, ctx, handle).await?;
        Ok(())
    }
}

/// `--kubeconfig` when given, otherwise in-cluster or the default kubeconfig: the
/// webhook also runs outside a cluster during development.
async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, CliError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|reason| {
                CliError::Kubeconfig {
                    path: path.to_owned(),
                    reason,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|reason| CliError::Kubeconfig {
                    path: path.to_owned(),
                    reason,
                })?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

impl SidecarArgs {
    pub fn injection_config(&self) -> InjectionConfig {
        InjectionConfig {
            image: self.image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            cpu: self.cpu.clone(),
            memory: self.memory.clone(),
            low_port_sysctl: self.low_port_sysctl,
            token_expiration_seconds: self.token_expiration_seconds,
        }
    }
}
