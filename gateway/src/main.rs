//! `otg-gateway`: runs the gateway; `otg-gateway migrate` prepares a ScyllaDB keyspace;
//! `otg-gateway check-config` validates the settings without starting.

use clap::Parser;
use otg_gateway::config::{Config, LogFormat, StoreKind};
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
    /// Loads and checks the settings (file and OTG_* variables) without starting:
    /// prints the effective settings (never the admin token) and exits 0, or names
    /// what is wrong and exits 1.
    CheckConfig,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    otg_gateway::allocator::return_freed_memory_sooner();
    let arguments = Arguments::parse();
    let config = Config::load(arguments.config.as_deref())?;
    start_logging(&config)?;
    let ignored = otg_gateway::config::ignored_service_link_variables();
    if !ignored.is_empty() {
        tracing::info!(variables = ignored.join(","), "ignoring Kubernetes service links: they are not settings");
    }
    match arguments.command {
        Some(Command::Migrate) => otg_gateway::migrate(&config).await,
        Some(Command::CheckConfig) => check_config(config),
        None => otg_gateway::run(config).await,
    }
}

/// Logs to stderr, as text or as one JSON object a line (`log_format`).
fn start_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .map_err(|error| anyhow::anyhow!("invalid configuration: log {:?}: {error}", config.log))?;
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    Ok(())
}

/// `otg-gateway check-config`: the checks `Config::load` leaves to start-up (the
/// ScyllaDB settings are parsed only when that store opens) run here too, so that a
/// config that passes starts. Prints the effective settings as TOML, without the token.
fn check_config(config: Config) -> anyhow::Result<()> {
    if config.store == StoreKind::Scylla {
        config.scylla_options()?;
        config.scylla_replication()?;
    }
    let admin_token = match &config.admin_token {
        Some(_) => "set (not shown)".to_owned(),
        None => format!("unset: made on first start and kept in {}", config.data_dir.join("admin-token").display()),
    };
    let settings = toml::to_string(&Config { admin_token: None, ..config })?;
    println!("# otg-gateway check-config: the configuration is valid\n# admin_token: {admin_token}\n{settings}");
    Ok(())
}
