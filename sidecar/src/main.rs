#![forbid(unsafe_code)]

use clap::Parser;
use kubevirt_bmc::cli::Args;

fn main() -> std::process::ExitCode {
    kubevirt_bmc_runtime::exit::exit_with(run())
}

// One thread: a BMC serves one VM, and its work is short protocol steps. A multi-threaded
// runtime spent most of an IPMI exchange waking workers on other cores (the bench's CPU rows
// show the difference); nothing in the BMC blocks its thread for long (file reads go through
// tokio::fs, whose blocking pool a current-thread runtime has too).
#[tokio::main(flavor = "current_thread")]
async fn run() -> anyhow::Result<()> {
    kubevirt_bmc_runtime::tls::install_crypto_provider();
    let args = Args::parse();
    args.log.init()?;
    args.run().await?;
    Ok(())
}
