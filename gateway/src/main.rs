//! `otg-gateway`: runs the gateway; `otg-gateway migrate` prepares a ScyllaDB keyspace.

use clap::Parser;
use otg_gateway::config::Config;
use std::path::PathBuf;

/// mimalloc, not glibc's malloc: under many threads allocating small values glibc
/// spent a quarter of the gateway's CPU in malloc and free (perf, issue 3 benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// otg, the Offline Tracking Gateway. Settings come from the file given, then from
/// OTG_* environment variables (OTG_LISTEN_ADDR, OTG_DATA_DIR, OTG_ADMIN_TOKEN, ...).
#[derive(Parser)]
#[command(version)]
struct Arguments {
    /// A TOML file of settings (see docs/configuration.md).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Creates the ScyllaDB keyspace if absent and applies every schema version it
    /// lacks (store = "scylla"); safe to run again, and before every upgrade.
    Migrate,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    otg_gateway::allocator::return_freed_memory_sooner();
    let arguments = Arguments::parse();
    let config = Config::load(arguments.config.as_deref())?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log)?)
        .with_writer(std::io::stderr)
        .init();
    match arguments.command {
        Some(Command::Migrate) => otg_gateway::migrate(&config).await,
        None => otg_gateway::run(config).await,
    }
}
