//! The `switchboard` command: parse, load config, wire, run.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard::cli::commands::{self, ConnectorCmd, DlqCmd, EventCmd, KeyCmd, Remote, ReplayCmd};
use switchboard::cli::{CliError, Format};
use switchboard::config::Config;

/// mimalloc rather than glibc's malloc: a Wasm delivery allocates and frees
/// hundreds of small objects across threads (store, resource table, HTTP
/// parts), where glibc spent ~13% of the CPU; docs/benchmarks-history.md, "Allocator".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Provisioning gateway: durable, ordered delivery of change events to sandboxed connectors"
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "SWITCHBOARD_LOG_JSON")]
    log_json: bool,
    /// The gateway the operator commands talk to.
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_URL",
        default_value = "http://127.0.0.1:7400"
    )]
    url: String,
    /// What the commands print: text for people, or the API's JSON for
    /// scripts.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Same as `--format json` (the older spelling, kept for scripts).
    #[arg(long, global = true, conflicts_with = "format")]
    json: bool,
    /// Bearer token for the operator commands (needed when the gateway has
    /// tokens configured).
    #[arg(long, global = true, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// TOML config file; without one, the embedded default (SQLite at
        /// ./switchboard.db, loopback only).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address, overriding the config (e.g. 127.0.0.1:7400).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Apply the store's migrations and exit (`serve` applies them too; with
    /// several nodes on one PostgreSQL, run this once before upgrading them).
    Migrate {
        /// TOML config file whose `storage.url` to migrate.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Storage URL, overriding the config (sqlite://… or postgres://…).
        #[arg(long)]
        storage: Option<String>,
    },
    /// Connectors: list, show, deploy a component (hot load), versions, roll back.
    #[command(subcommand)]
    Connector(ConnectorCmd),
    /// Events: send, show with their deliveries.
    #[command(subcommand)]
    Event(EventCmd),
    /// Dead letters: list, retry, skip.
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// Keys: why is this key blocked.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Replays: deliver stored events again to one connector (or backfill a
    /// new one); list, show, cancel.
    #[command(subcommand)]
    Replay(ReplayCmd),
    /// Per-connector queue depth and throughput, refreshing in place on a
    /// terminal; into a pipe or a file, one snapshot and exit.
    Status {
        /// One snapshot and exit, on a terminal too.
        #[arg(long)]
        once: bool,
        /// Refresh interval in seconds.
        #[arg(long, default_value_t = 2)]
        every: u64,
    },
    /// The audit log of operator actions, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

fn main() {
    // The error and its causes on one line, never a backtrace: a typo in the
    // config is not a crash, whatever RUST_BACKTRACE says.
    if let Err(e) = run() {
        eprintln!("error: {}", error_line(&e));
        // An operator command's documented code (2 usage, 3 unreachable);
        // 1 for every other failure.
        let code = e.downcast_ref::<CliError>().map_or(1, CliError::exit_code);
        std::process::exit(code);
    }
}

/// An error and its causes as `outer: cause: root`, each said once: many
/// errors repeat their source in their own message, and printing the chain
/// as well gave "Address already in use (os error 98): Address already in
/// use (os error 98)".
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut previous = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        // Said already by the error it caused (only that one: a short root
        // cause such as "timed out" may well appear further up, too).
        if text.is_empty() || previous.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
        previous = text;
    }
    line
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let format = if cli.json { Format::Json } else { cli.format };
    let remote = Remote {
        url: cli.url,
        format,
        token: cli.token,
    };
    match cli.command {
        Command::Serve { config, listen } => serve(config.as_deref(), listen)?,
        Command::Migrate { config, storage } => migrate(config.as_deref(), storage, format)?,
        Command::Connector(cmd) => commands::connector(&remote, cmd)?,
        Command::Event(cmd) => commands::event(&remote, cmd)?,
        Command::Dlq(cmd) => commands::dlq(&remote, cmd)?,
        Command::Key(cmd) => commands::key(&remote, cmd)?,
        Command::Replay(cmd) => commands::replay(&remote, cmd)?,
        Command::Status { once, every } => commands::status(&remote, once, every)?,
        Command::Audit { limit } => commands::audit(&remote, limit)?,
    }
    Ok(())
}

fn serve(config: Option<&Path>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let overrides = switchboard::config::Overrides { listen };
    let cfg = Config::load_with(config, std::env::vars(), &overrides)?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.server.workers > 0 {
        rt.worker_threads(cfg.server.workers);
    }
    let rt = rt
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(switchboard::app::run(cfg, shutdown_signal()))?;
    Ok(())
}

fn migrate(config: Option<&Path>, storage: Option<String>, format: Format) -> anyhow::Result<()> {
    let url = match storage {
        Some(url) => url,
        None => Config::load(config, std::env::vars())?.storage.url,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let versions = rt.block_on(switchboard::store::migrate(&url))?;
    commands::migrated(&versions, format)?;
    Ok(())
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,wasmtime=warn,cranelift=warn"));
    let colour = log_colour(
        json,
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Colour in the log only for a person at a terminal: never in a file, a
/// pipe or a journal (escape codes there are noise a search trips over),
/// never in JSON, and never when `NO_COLOR` is set to anything but the empty
/// string (https://no-color.org).
fn log_colour(json: bool, stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    !json && stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::{error_line, log_colour};
    use std::ffi::OsStr;

    #[test]
    fn the_log_is_coloured_only_on_a_terminal_without_no_color() {
        assert!(log_colour(false, true, None));
        assert!(
            log_colour(false, true, Some(OsStr::new(""))),
            "empty is unset"
        );
        assert!(!log_colour(false, false, None), "a file or a pipe");
        assert!(!log_colour(false, true, Some(OsStr::new("1"))));
        assert!(
            !log_colour(false, true, Some(OsStr::new("false"))),
            "any value"
        );
        assert!(!log_colour(true, true, None), "JSON lines");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:7400: {source}")]
    struct Listen {
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let e = anyhow::Error::new(Listen { source: io }).context("serve");
        assert_eq!(
            error_line(&e),
            "serve: cannot listen on 127.0.0.1:7400: Address already in use"
        );
        let plain = anyhow::anyhow!("root").context("middle").context("outer");
        assert_eq!(error_line(&plain), "outer: middle: root");
        let repeated = anyhow::anyhow!("timed out")
            .context("connect")
            .context("probe timed out");
        assert_eq!(error_line(&repeated), "probe timed out: connect: timed out");
    }
}
