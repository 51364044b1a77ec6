//! One function per operator command, with the clap arguments it takes.
//!
//! Each returns how it failed as a [`CliError`], whose exit code the binary
//! exits with; none exits the process itself. The commands that ask the
//! gateway run on a current-thread runtime of their own ([`Remote::run`]):
//! they send one request at a time, so they need no worker threads. `connector
//! new` and the report of `migrate` run without the gateway.

use std::future::Future;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::table::{
    audit_text, connectors_text, dead_text, event_text, lanes_text, replays_text, status_table,
    versions_text,
};
use super::{emit, path, query, read_file, CliError, Client, Format};

#[derive(clap::Args)]
pub struct DlqFilter {
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
        query(&q)
    }
}

#[derive(Subcommand)]
pub enum DlqCmd {
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
pub enum ReplayCmd {
    /// Deliver stored events again to one connector, behind what is
    /// queued, in accept order; without --type, what its routes take (a
    /// backfill of a new connector).
    Start {
        connector: String,
        /// Events accepted at or after this time (UTC, `2026-12-03T16:40`).
        #[arg(long)]
        since: String,
        /// And before this time (UTC); default now.
        #[arg(long)]
        until: Option<String>,
        /// Type patterns (repeatable): `number.*`, `forwarding.set`.
        #[arg(long = "type")]
        types: Vec<String>,
        /// Only events with this key.
        #[arg(long)]
        key: Option<String>,
        /// Copies per second at most; default half the connector's rate, or 200.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Replays, newest first, with their progress.
    List,
    /// One replay and its progress.
    Show { id: i64 },
    /// Stop a replay: no more copies; its deliveries not started end as expired.
    Cancel { id: i64 },
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Per connector: the lane's head delivery, its state, attempts, last
    /// error, next attempt, and how many wait behind it.
    Why { key: String },
}

#[derive(Subcommand)]
pub enum ConnectorCmd {
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
    /// Scaffold a new connector in DIR/NAME, in Rust (a crate built for
    /// wasm32-wasip2, tests against a fake upstream), TypeScript or Python
    /// (the SDK, the toolchain pins and the WIT written into it; tests run
    /// the built component with `connector check`). Its README has the
    /// build, test and deploy commands.
    New {
        name: String,
        /// Parent directory of the new connector.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// rust, ts (TypeScript) or python.
        #[arg(long, default_value = "rust")]
        lang: Lang,
        /// The Rust guest SDK the crate depends on (by path; Rust only).
        /// Default: the `sdk/` of the Switchboard checkout this binary was
        /// built in, found from where the binary is.
        #[arg(long, env = "SWITCHBOARD_SDK")]
        sdk: Option<PathBuf>,
    },
    /// Load a component (.wasm) in the gateway's sandbox, without a gateway,
    /// as an upload would: print what it declares and its footprint; with
    /// --event, deliver that event once and print the outcome.
    Check {
        file: PathBuf,
        /// A configuration value the connector reads (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// A host it may call, `host:port` or `host` (repeatable).
        #[arg(long = "allow-host", value_name = "HOST")]
        allow_hosts: Vec<String>,
        /// An event to deliver ({"id", "type", "keys", "payload"}; - for stdin).
        #[arg(long)]
        event: Option<PathBuf>,
        /// The connector's memory limit (default 64).
        #[arg(long)]
        memory_mb: Option<usize>,
    },
}

#[derive(Subcommand)]
pub enum EventCmd {
    /// POST an event or a batch (JSON file, or - for stdin).
    Send { file: PathBuf },
    /// An event and the state of each of its deliveries.
    Show { id: String },
}

/// Where and how the operator commands talk to the gateway: the global
/// `--url`, `--format` (or `--json`) and `--token`.
pub struct Remote {
    pub url: String,
    pub format: Format,
    pub token: Option<String>,
}

impl Remote {
    /// Runs one command against the gateway to its end. The future owns its
    /// [`Client`], so a command is an `async move` block and needs no boxing.
    fn run<F>(&self, command: impl FnOnce(Client) -> F) -> Result<(), CliError>
    where
        F: Future<Output = Result<(), CliError>>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CliError::Runtime)?;
        let client = Client::new(&self.url, self.format, self.token.clone())?;
        rt.block_on(command(client))
    }
}

/// `migrate`'s report, once the store is migrated: the schema version now in
/// force and the migrations this run applied (none when it was up to date).
pub fn migrated(versions: &[i64], format: Format) -> Result<(), CliError> {
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
    emit(&text)
}

/// `connector …`: `new` scaffolds a crate here, without the gateway; the
/// rest ask the gateway.
pub fn connector(remote: &Remote, cmd: ConnectorCmd) -> Result<(), CliError> {
    match cmd {
        ConnectorCmd::New {
            name,
            dir,
            lang,
            sdk,
        } => connector_new(&name, &dir, lang, sdk, remote.format),
        ConnectorCmd::Check {
            file,
            config,
            allow_hosts,
            event,
            memory_mb,
        } => super::check::check(
            super::check::CheckArgs {
                file,
                config,
                allow_hosts,
                event,
                memory_mb,
            },
            remote.format,
        ),
        cmd => remote.run(|c| async move { connector_on(&c, cmd).await }),
    }
}

/// `connector new`: a refusal (a bad name, a directory in the way) is a
/// usage error.
fn connector_new(
    name: &str,
    dir: &Path,
    lang: Lang,
    sdk: Option<PathBuf>,
    format: Format,
) -> Result<(), CliError> {
    use switchboard_connector_test::scaffold;
    let (path, next) = match lang {
        Lang::Rust => (
            scaffold::scaffold(name, dir, &rust_sdk(sdk)?),
            "cargo build --release && cargo test --target host-tuple",
        ),
        Lang::Ts => (
            scaffold::scaffold_ts(name, dir),
            "npm ci && npm run build && npm test",
        ),
        Lang::Python => (
            scaffold::scaffold_python(name, dir),
            "make build && make test",
        ),
    };
    let path = path.map_err(|e| CliError::Usage(e.to_string()))?;
    let text = match format {
        Format::Json => serde_json::json!({ "created": path }).to_string(),
        Format::Text => format!("created {0}\nnext: cd {0} && {next}", path.display()),
    };
    emit(&text)
}

/// The Rust SDK a new crate depends on: the one given, else the `sdk/` of
/// the checkout the running binary sits in (`<checkout>/target/*/switchboard`),
/// else the one this binary was built from, if it is still there.
fn rust_sdk(given: Option<PathBuf>) -> Result<PathBuf, CliError> {
    if let Some(sdk) = given {
        return Ok(sdk);
    }
    let is_sdk = |dir: &Path| {
        std::fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|t| t.contains("name = \"switchboard-sdk\""))
    };
    let exe = std::env::current_exe().ok();
    let found = exe
        .iter()
        .flat_map(|exe| exe.ancestors().skip(1))
        .map(|dir| dir.join("sdk"))
        .chain(std::iter::once(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk"),
        ))
        .find(|dir| is_sdk(dir));
    found.ok_or_else(|| {
        CliError::Usage(
            "cannot find the Rust guest SDK (the `sdk/` directory of a Switchboard checkout): \
             pass --sdk PATH or set SWITCHBOARD_SDK"
                .into(),
        )
    })
}

/// The languages `connector new` scaffolds.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Ts,
    Python,
}

async fn connector_on(c: &Client, cmd: ConnectorCmd) -> Result<(), CliError> {
    match cmd {
        ConnectorCmd::List => {
            let v = c.get("/v1/connectors").await?;
            c.print(&v, connectors_text)?;
        }
        ConnectorCmd::Show { name } => {
            let v = c.get(&path(&["v1", "connectors", &name])).await?;
            c.print(&v, connectors_text)?;
        }
        ConnectorCmd::Deploy { name, file } => {
            let wasm = read_file(&file)?;
            // A JavaScript or Python component (13-20 MB) takes 10-20 s to
            // compile and check; say so on stderr, so the wait reads as work
            // and stdout stays the answer alone.
            let big = wasm.len() > 1 << 20;
            let started = std::time::Instant::now();
            if big {
                eprintln!(
                    "uploading {} ({:.1} MB); the gateway compiles and checks it before it answers \
                     (10-20 s for a component this size)…",
                    file.display(),
                    wasm.len() as f64 / 1e6
                );
            }
            let v = c
                .put_bytes(&path(&["v1", "connectors", &name, "component"]), wasm)
                .await?;
            if big {
                eprintln!("accepted after {:.1} s", started.elapsed().as_secs_f64());
            }
            c.print(&v, |v| format!("deployed {name}:\n{}", versions_text(v)))?;
        }
        ConnectorCmd::Versions { name } => {
            let v = c
                .get(&path(&["v1", "connectors", &name, "versions"]))
                .await?;
            c.print(&v, versions_text)?;
        }
        ConnectorCmd::Pause { name } => set_paused(c, &name, "pause").await?,
        ConnectorCmd::Resume { name } => set_paused(c, &name, "resume").await?,
        ConnectorCmd::Configure { name, file } => {
            let body = read_file(&file)?;
            let v = c
                .put_json(&path(&["v1", "connectors", &name]), body)
                .await?;
            c.print(&v, connectors_text)?;
        }
        ConnectorCmd::Limits {
            name,
            concurrency,
            rate,
        } => {
            let body = serde_json::json!({"concurrency": concurrency, "rate": rate});
            let v = c
                .put_json(
                    &path(&["v1", "connectors", &name, "limits"]),
                    body.to_string().into_bytes(),
                )
                .await?;
            c.print(&v, |v| format!("limits of {name}: {}", v["overrides"]))?;
        }
        ConnectorCmd::New { .. } | ConnectorCmd::Check { .. } => {
            return Err(CliError::Usage(
                "`connector new` and `connector check` run locally".into(),
            ));
        }
        ConnectorCmd::Rollback { name } => {
            let v = c
                .post_empty(&path(&["v1", "connectors", &name, "rollback"]))
                .await?;
            c.print(&v, |v| {
                format!("rolled back {name} to:\n{}", versions_text(v))
            })?;
        }
    }
    Ok(())
}

async fn set_paused(c: &Client, name: &str, action: &str) -> Result<(), CliError> {
    let v = c
        .post_empty(&path(&["v1", "connectors", name, action]))
        .await?;
    c.print(&v, |v| format!("{action}d:\n{}", connectors_text(v)))
}

/// `event send | show`.
pub fn event(remote: &Remote, cmd: EventCmd) -> Result<(), CliError> {
    remote.run(|c| async move {
        match cmd {
            EventCmd::Send { file } => {
                let body = read_file(&file)?;
                let v = c.post_json("/v1/events", body).await?;
                c.print(&v, |v| {
                    format!(
                        "accepted {}, duplicates {}, unrouted {}",
                        v["accepted"], v["duplicates"], v["unrouted"]
                    )
                })
            }
            EventCmd::Show { id } => {
                let v = c.get(&path(&["v1", "events", &id])).await?;
                c.print(&v, event_text)
            }
        }
    })
}

/// `dlq list | retry | skip`: retry and skip take delivery ids, or `--all`
/// with the list's filters, never both.
pub fn dlq(remote: &Remote, cmd: DlqCmd) -> Result<(), CliError> {
    remote.run(|c| async move { dlq_on(&c, cmd).await })
}

async fn dlq_on(c: &Client, cmd: DlqCmd) -> Result<(), CliError> {
    let (action, ids, all, filter) = match cmd {
        DlqCmd::List(filter) => {
            let v = c
                .get(&format!("/v1/dead-letters{}", filter.query()))
                .await?;
            return c.print(&v, dead_text);
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
                    .post_empty(&path(&["v1", "deliveries", &id.to_string(), action]))
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

/// `key why KEY`.
pub fn key(remote: &Remote, cmd: KeyCmd) -> Result<(), CliError> {
    let KeyCmd::Why { key } = cmd;
    remote.run(|c| async move {
        let v = c.get(&path(&["v1", "keys", &key])).await?;
        c.print(&v, lanes_text)
    })
}

/// `replay start|list|show|cancel`.
pub fn replay(remote: &Remote, cmd: ReplayCmd) -> Result<(), CliError> {
    let time = |field: &str, text: &str| {
        crate::timefmt::parse_utc(text).ok_or_else(|| {
            CliError::Usage(format!(
                "--{field} {text:?} is not a time: use YYYY-MM-DDTHH:MM (UTC)"
            ))
        })
    };
    match cmd {
        ReplayCmd::Start {
            connector,
            since,
            until,
            types,
            key,
            rate,
        } => {
            let mut body = serde_json::json!({
                "connector": connector,
                "since": time("since", &since)?,
                "types": types,
            });
            if let Some(u) = until {
                body["until"] = time("until", &u)?.into();
            }
            if let Some(k) = key {
                body["key"] = k.into();
            }
            if let Some(r) = rate {
                body["rate"] = r.into();
            }
            remote.run(|c| async move {
                let v = c
                    .post_json("/v1/replays", body.to_string().into_bytes())
                    .await?;
                c.print(&v, replays_text)
            })
        }
        ReplayCmd::List => remote.run(|c| async move {
            let v = c.get("/v1/replays").await?;
            c.print(&v, replays_text)
        }),
        ReplayCmd::Show { id } => remote.run(|c| async move {
            let v = c.get(&format!("/v1/replays/{id}")).await?;
            c.print(&v, replays_text)
        }),
        ReplayCmd::Cancel { id } => remote.run(|c| async move {
            let v = c.post_empty(&format!("/v1/replays/{id}/cancel")).await?;
            c.print(&v, |v| {
                format!(
                    "{}\n{} deliveries not started end as expired",
                    replays_text(&v["replay"]),
                    v["ended"]
                )
            })
        }),
    }
}

/// `audit`: the newest `limit` operator actions.
pub fn audit(remote: &Remote, limit: usize) -> Result<(), CliError> {
    remote.run(|c| async move {
        let v = c.get(&format!("/v1/audit?limit={limit}")).await?;
        c.print(&v, audit_text)
    })
}

/// `status`: on a terminal, the table redrawn in place every `every`
/// seconds (at least one); into a pipe or a file (or with `--once`), one
/// snapshot and exit, so `switchboard status | grep hss` ends and a file
/// holds no escape codes.
pub fn status(remote: &Remote, once: bool, every: u64) -> Result<(), CliError> {
    let every = every.max(1);
    remote.run(|c| async move { status_on(&c, once, every).await })
}

async fn status_on(c: &Client, once: bool, every: u64) -> Result<(), CliError> {
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
            let table = status_table(&v, before, crate::queue::now_ms()).render_wider(&mut widths);
            if once || !redraw {
                emit(&table)?;
            } else {
                // Clear and home: the table refreshes in place.
                emit(&format!("\x1b[2J\x1b[H{table}"))?;
            }
        }
        if once {
            return Ok(());
        }
        previous = Some((now, v));
        tokio::time::sleep(std::time::Duration::from_secs(every)).await;
    }
}
