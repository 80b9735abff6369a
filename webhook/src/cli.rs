//! Command line of the `kubevirt-bmc-webhook` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use kubevirt_bmc::telemetry::LogArgs;

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
    /// Kubeconfig to use; the in-cluster configuration or the default kubeconfig otherwise.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}
