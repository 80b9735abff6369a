#![forbid(unsafe_code)]

use clap::Parser;
use kubevirt_bmc_webhook::cli::Args;

/// jemalloc rather than glibc malloc: the controller builds its cache from pages of
/// 500 objects parsed, copied into the store and dropped on two runtime threads, and glibc's
/// per-thread arenas kept those holes resident (10,000 VMs: 112 MiB RSS with a 57 MiB heap).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    kubevirt_bmc_runtime::exit::exit_with(run())
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    kubevirt_bmc_runtime::tls::install_crypto_provider();
    let args = Args::parse();
    args.log.init()?;
    // jemalloc's purging thread returns freed pages after its decay time even when nothing
    // allocates (a quiet controller would otherwise keep the cold start's peak). Without it
    // only allocation activity purges, so failing to start it costs memory, not function.
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "jemalloc background thread not started");
    }
    args.run().await?;
    Ok(())
}
