#![forbid(unsafe_code)]

use clap::Parser;
use kubevirt_bmc_webhook::cli::Args;

fn main() -> std::process::ExitCode {
    kubevirt_bmc_runtime::exit::exit_with(run())
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    kubevirt_bmc_runtime::tls::install_crypto_provider();
    let args = Args::parse();
    args.log.init()?;
    args.run().await?;
    Ok(())
}
