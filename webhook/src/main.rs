#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kubevirt_bmc_webhook::cli::Args;
use kubevirt_bmc_webhook::metrics::Metrics;
use kubevirt_bmc_webhook::server::{self, Context, ServeConfig};
use kubevirt_bmc_webhook::tls_reload::CertFiles;

fn main() -> std::process::ExitCode {
    kubevirt_bmc::cli::exit_with(run())
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    kubevirt_bmc::tls::install_crypto_provider();
    let args = Args::parse();
    args.log.init()?;
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context {
        injection: args.sidecar.injection_config(),
        metrics: metrics.clone(),
    });
    let config = ServeConfig {
        listen: args.listen,
        files: CertFiles {
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
        },
        reload_interval: Duration::from_secs(args.tls_reload_seconds.max(1)),
    };
    if !args.no_controller {
        let client = kube_client(args.kubeconfig.as_deref()).await?;
        let instance = std::env::var("POD_NAME").unwrap_or_else(|_| "local".to_owned());
        tokio::spawn(kubevirt_bmc_webhook::controller::run::run(
            client,
            metrics.clone(),
            instance,
        ));
    }
    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        kubevirt_bmc::cli::shutdown_signal().await;
        shutdown.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    server::serve(config, ctx, handle).await?;
    Ok(())
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}
