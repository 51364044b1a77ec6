//! The `switchboard` command: parse, load config, wire, run.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard::cli::{self, CliError, Client, Format};
use switchboard::config::Config;

/// mimalloc rather than glibc's malloc: a Wasm delivery allocates and frees
/// hundreds of small objects across threads (store, resource table, HTTP
/// parts), where glibc spent ~13% of the CPU; BENCHMARKS.md, "Allocator".
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

#[derive(clap::Args)]
struct DlqFilter {
    #[arg(long)]
    connector: Option<String>,
    #[arg(long = "type")]
    event_type: Option<String>,
    #[arg(long)]
    key: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

impl DlqFilter {
    fn query(&self) -> String {
        let mut q = vec![("limit", self.limit.to_string())];
        if let Some(c) = &self.connector {
            q.push(("connector", c.clone()));
        }
        if let Some(t) = &self.event_type {
            q.push(("type", t.clone()));
        }
        if let Some(k) = &self.key {
            q.push(("key", k.clone()));
        }
        cli::query(&q)
    }
}

#[derive(Subcommand)]
enum DlqCmd {
    /// Dead letters, newest first.
    List(DlqFilter),
    /// Back to ready in the same lane position: by id, or every match with --all.
    Retry {
        ids: Vec<i64>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: DlqFilter,
    },
    /// Final; releases the keys: by id, or every match with --all.
    Skip {
        ids: Vec<i64>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: DlqFilter,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Per connector: the lane's head delivery, its state, attempts, last
    /// error, next attempt, and how many wait behind it.
    Why { key: String },
}

#[derive(Subcommand)]
enum ConnectorCmd {
    /// Every configured connector with its component and queue.
    List,
    /// One connector.
    Show { name: String },
    /// Upload a component (.wasm) as the connector's next version; validated
    /// before it is accepted, used by new deliveries at once.
    Deploy { name: String, file: PathBuf },
    /// Stored component versions, newest first.
    Versions { name: String },
    /// Re-activate the version uploaded before the active one.
    Rollback { name: String },
    /// Stop attempting deliveries (events are still accepted and queued).
    Pause { name: String },
    /// Attempt deliveries again.
    Resume { name: String },
    /// Create a connector, or replace its settings, from a JSON file (the
    /// fields of a `[[connectors]]` entry; - for stdin). In force at once, on
    /// every node.
    Configure { name: String, file: PathBuf },
    /// Override concurrency and rate at run time, on every node; flags left
    /// out go back to the configured value.
    Limits {
        name: String,
        #[arg(long)]
        concurrency: Option<u32>,
        /// Deliveries per second.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Scaffold a new connector crate (builds for wasm32-wasip2, with tests
    /// against a fake upstream) in DIR/NAME.
    New {
        name: String,
        /// Parent directory of the new crate.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The guest SDK the crate depends on (by path).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk"))]
        sdk: PathBuf,
    },
}

#[derive(Subcommand)]
enum EventCmd {
    /// POST an event or a batch (JSON file, or - for stdin).
    Send { file: PathBuf },
    /// An event and the state of each of its deliveries.
    Show { id: String },
}

fn main() {
    // The error and its causes on one line, never a backtrace: a typo in the
    // config is not a crash, whatever RUST_BACKTRACE says.
    if let Err(e) = run() {
        eprintln!("error: {}", error_line(&e));
        std::process::exit(1);
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
        url: cli.url.clone(),
        format,
        token: cli.token.clone(),
    };
    match cli.command {
        Command::Serve { config, listen } => {
            let overrides = switchboard::config::Overrides { listen };
            let cfg = Config::load_with(config.as_deref(), std::env::vars(), &overrides)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(switchboard::app::run(cfg, shutdown_signal()))?;
            Ok(())
        }
        Command::Migrate { config, storage } => {
            let url = match storage {
                Some(url) => url,
                None => {
                    Config::load(config.as_deref(), std::env::vars())?
                        .storage
                        .url
                }
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let versions = rt.block_on(switchboard::store::migrate(&url))?;
            let last = versions.last().copied().unwrap_or(0);
            let text = match format {
                Format::Json => {
                    serde_json::json!({"schema_version": last, "applied": versions}).to_string()
                }
                Format::Text => format!(
                    "store migrated: schema version {last} ({} migrations applied)",
                    versions.len()
                ),
            };
            cli::emit(&text)?;
            Ok(())
        }
        Command::Connector(ConnectorCmd::New { name, dir, sdk }) => {
            match switchboard_connector_test::scaffold::scaffold(&name, &dir, &sdk) {
                Ok(path) => {
                    let text = match format {
                        Format::Json => serde_json::json!({ "created": path }).to_string(),
                        Format::Text => format!(
                            "created {0}\nnext: cd {0} && cargo build --release && cargo test --target host-tuple",
                            path.display()
                        ),
                    };
                    cli::emit(&text)?;
                    Ok(())
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(CliError::Usage(String::new()).exit_code());
                }
            }
        }
        Command::Connector(cmd) => operator(&remote, |c| Box::pin(connector(c, cmd))),
        Command::Event(cmd) => operator(&remote, |c| Box::pin(event(c, cmd))),
        Command::Dlq(cmd) => operator(&remote, |c| Box::pin(dlq(c, cmd))),
        Command::Key(KeyCmd::Why { key }) => operator(&remote, |c| {
            Box::pin(async move {
                let v = c.get(&cli::path(&["v1", "keys", &key])).await?;
                c.print(&v, cli::lanes_text)
            })
        }),
        Command::Status { once, every } => {
            operator(&remote, |c| Box::pin(status(c, once, every.max(1))))
        }
        Command::Audit { limit } => operator(&remote, |c| {
            Box::pin(async move {
                let v = c.get(&format!("/v1/audit?limit={limit}")).await?;
                c.print(&v, cli::audit_text)
            })
        }),
    }
}

type CliFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CliError>> + 'a>>;

/// Where and how the operator commands talk to the gateway.
struct Remote {
    url: String,
    format: Format,
    token: Option<String>,
}

/// Runs an operator command and exits with its documented code.
fn operator(
    cli: &Remote,
    f: impl for<'a> FnOnce(&'a Client) -> CliFuture<'a>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = Client::new(&cli.url, cli.format, cli.token.clone())
        .and_then(|client| rt.block_on(f(&client)));
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
    Ok(())
}

async fn set_paused(c: &Client, name: &str, action: &str) -> Result<(), CliError> {
    let v = c
        .post_empty(&cli::path(&["v1", "connectors", name, action]))
        .await?;
    c.print(&v, |v| format!("{action}d:\n{}", cli::connectors_text(v)))
}

async fn connector(c: &Client, cmd: ConnectorCmd) -> Result<(), CliError> {
    match cmd {
        ConnectorCmd::List => {
            let v = c.get("/v1/connectors").await?;
            c.print(&v, cli::connectors_text)?;
        }
        ConnectorCmd::Show { name } => {
            let v = c.get(&cli::path(&["v1", "connectors", &name])).await?;
            c.print(&v, cli::connectors_text)?;
        }
        ConnectorCmd::Deploy { name, file } => {
            let wasm = cli::read_file(&file)?;
            let v = c
                .put_bytes(&cli::path(&["v1", "connectors", &name, "component"]), wasm)
                .await?;
            c.print(&v, |v| {
                format!("deployed {name}:\n{}", cli::versions_text(v))
            })?;
        }
        ConnectorCmd::Versions { name } => {
            let v = c
                .get(&cli::path(&["v1", "connectors", &name, "versions"]))
                .await?;
            c.print(&v, cli::versions_text)?;
        }
        ConnectorCmd::Pause { name } => set_paused(c, &name, "pause").await?,
        ConnectorCmd::Resume { name } => set_paused(c, &name, "resume").await?,
        ConnectorCmd::Configure { name, file } => {
            let body = cli::read_file(&file)?;
            let v = c
                .put_json(&cli::path(&["v1", "connectors", &name]), body)
                .await?;
            c.print(&v, cli::connectors_text)?;
        }
        ConnectorCmd::Limits {
            name,
            concurrency,
            rate,
        } => {
            let body = serde_json::json!({"concurrency": concurrency, "rate": rate});
            let v = c
                .put_json(
                    &cli::path(&["v1", "connectors", &name, "limits"]),
                    body.to_string().into_bytes(),
                )
                .await?;
            c.print(&v, |v| format!("limits of {name}: {}", v["overrides"]))?;
        }
        ConnectorCmd::New { .. } => {
            return Err(CliError::Usage("`connector new` runs locally".into()));
        }
        ConnectorCmd::Rollback { name } => {
            let v = c
                .post_empty(&cli::path(&["v1", "connectors", &name, "rollback"]))
                .await?;
            c.print(&v, |v| {
                format!("rolled back {name} to:\n{}", cli::versions_text(v))
            })?;
        }
    }
    Ok(())
}

/// `status`: on a terminal, the table redrawn in place every `every`
/// seconds; into a pipe or a file (or with `--once`), one snapshot and exit,
/// so `switchboard status | grep hss` ends and a file holds no escape codes.
async fn status(c: &Client, once: bool, every: u64) -> Result<(), CliError> {
    let terminal = std::io::stdout().is_terminal();
    let once = once || !terminal;
    // A dumb terminal cannot clear: snapshots follow one another there.
    let redraw = terminal && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
    let mut previous: Option<(std::time::Instant, serde_json::Value)> = None;
    let mut widths = Vec::new();
    loop {
        let v = c.get("/v1/connectors").await?;
        let now = std::time::Instant::now();
        if c.json() {
            c.print(&v, |_| String::new())?;
        } else {
            let before = previous
                .as_ref()
                .map(|(t, p)| (p, now.duration_since(*t).as_secs_f64()));
            let table = cli::status_table(&v, before, switchboard::queue::now_ms())
                .render_wider(&mut widths);
            if once || !redraw {
                cli::emit(&table)?;
            } else {
                // Clear and home: the table refreshes in place.
                cli::emit(&format!("\x1b[2J\x1b[H{table}"))?;
            }
        }
        if once {
            return Ok(());
        }
        previous = Some((now, v));
        tokio::time::sleep(std::time::Duration::from_secs(every)).await;
    }
}

async fn dlq(c: &Client, cmd: DlqCmd) -> Result<(), CliError> {
    let (action, ids, all, filter) = match cmd {
        DlqCmd::List(filter) => {
            let v = c
                .get(&format!("/v1/dead-letters{}", filter.query()))
                .await?;
            return c.print(&v, cli::dead_text);
        }
        DlqCmd::Retry { ids, all, filter } => ("retry", ids, all, filter),
        DlqCmd::Skip { ids, all, filter } => ("skip", ids, all, filter),
    };
    match (ids.is_empty(), all) {
        (true, true) => {
            let v = c
                .post_empty(&format!("/v1/dead-letters/{action}{}", filter.query()))
                .await?;
            c.print(&v, |v| {
                format!(
                    "{action}: {} of {} dead letters",
                    v["applied"], v["matched"]
                )
            })?;
        }
        (false, false) => {
            for id in ids {
                let v = c
                    .post_empty(&cli::path(&["v1", "deliveries", &id.to_string(), action]))
                    .await?;
                c.print(&v, |v| format!("{action}: delivery {}", v["delivery_id"]))?;
            }
        }
        _ => {
            return Err(CliError::Usage(
                "name delivery ids, or use --all (with filters) — not both".into(),
            ))
        }
    }
    Ok(())
}

async fn event(c: &Client, cmd: EventCmd) -> Result<(), CliError> {
    match cmd {
        EventCmd::Send { file } => {
            let body = cli::read_file(&file)?;
            let v = c.post_json("/v1/events", body).await?;
            c.print(&v, |v| {
                format!(
                    "accepted {}, duplicates {}, unrouted {}",
                    v["accepted"], v["duplicates"], v["unrouted"]
                )
            })?;
        }
        EventCmd::Show { id } => {
            let v = c.get(&cli::path(&["v1", "events", &id])).await?;
            c.print(&v, cli::event_text)?;
        }
    }
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
