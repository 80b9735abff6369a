#![forbid(unsafe_code)]

use clap::Parser;
use kubevirt_bmc::cli::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kubevirt_bmc::tls::install_crypto_provider();
    let args = Args::parse();
    args.log.init()?;
    args.run().await?;
    Ok(())
}
