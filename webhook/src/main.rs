#![forbid(unsafe_code)]

use clap::Parser;
use kubevirt_bmc_webhook::cli::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kubevirt_bmc::tls::install_crypto_provider();
    let args = Args::parse();
    args.log.init()?;
    kubevirt_bmc_webhook::server::serve(args.listen, &args.tls_cert, &args.tls_key).await?;
    Ok(())
}
