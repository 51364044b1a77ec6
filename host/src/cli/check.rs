//! `switchboard connector check FILE`: a component in the gateway's own
//! sandbox, without a gateway. It loads the `.wasm` exactly as an upload
//! does (compile, world check, footprint, `describe` under the limits) and
//! prints what it declares; with `--event`, it delivers that event once,
//! with the given config and allowed hosts, and prints the outcome.
//!
//! This is how a connector written in any language is tested without Rust:
//! the TypeScript and Python scaffolds' tests run it against a local server.
//! A component that does not load is a refusal (exit 1) with the reason;
//! an outcome of any kind is a successful check (exit 0): the caller judges it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use switchboard_sandbox::{Delivery, Limits, Outcome, Runtime, RuntimeConfig, Sandbox};

use super::{emit, read_file, CliError, Format};

/// What `connector check` was given.
pub struct CheckArgs {
    pub file: PathBuf,
    pub config: Vec<String>,
    pub allow_hosts: Vec<String>,
    pub event: Option<PathBuf>,
    pub memory_mb: Option<usize>,
}

pub fn check(args: CheckArgs, format: Format) -> Result<(), CliError> {
    let wasm = read_file(&args.file)?;
    let mut config = BTreeMap::new();
    for pair in &args.config {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--config takes KEY=VALUE, not `{pair}`")))?;
        config.insert(k.to_string(), v.to_string());
    }
    let event = args.event.as_deref().map(delivery_of).transpose()?;
    let mut limits = Limits::default();
    if let Some(mb) = args.memory_mb {
        limits.memory_bytes = mb << 20;
    }
    let sandbox = Sandbox {
        connector: "check".into(),
        allowed_hosts: args.allow_hosts,
        config,
        limits: limits.clone(),
        ..Sandbox::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let answer = rt.block_on(async move {
        let runtime = Runtime::new(RuntimeConfig {
            max_instances: 8,
            // A JavaScript or Python component compiles in 10-20 s; kept,
            // the next check of the same bytes loads in well under one.
            cache_dir: Some(std::env::temp_dir().join("switchboard-check-cache")),
            ..RuntimeConfig::default()
        })
        .map_err(|e| CliError::Refused(e.to_string()))?;
        let component = runtime
            .load_with(&wasm, &limits)
            .await
            .map_err(|e| CliError::Refused(format!("{}: {e}", args.file.display())))?;
        let info = component.info();
        let f = component.footprint();
        let mut answer = json!({
            "name": info.name,
            "version": info.version,
            "config": info.config.iter().map(|c| json!({
                "name": c.name, "required": c.required, "description": c.description,
            })).collect::<Vec<_>>(),
            "footprint": {
                "core_instances": f.core_instances,
                "memories": f.memories,
                "tables": f.tables,
                "slots": f.slots(),
            },
        });
        if let Some(delivery) = event {
            answer["outcome"] = outcome_json(&component.deliver(&sandbox, &delivery).await);
        }
        Ok::<Value, CliError>(answer)
    })?;
    let text = match format {
        Format::Json => answer.to_string(),
        Format::Text => text_of(&answer),
    };
    emit(&text)
}

/// The event to deliver: `{"id", "type", "keys", "payload"}` as posted to
/// the gateway; the delivery id is `<id>-check`, attempt 1.
fn delivery_of(path: &Path) -> Result<Delivery, CliError> {
    let bytes = read_file(path)?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| CliError::Usage(format!("{}: not JSON: {e}", path.display())))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                CliError::Usage(format!("{}: `{name}` must be a string", path.display()))
            })
    };
    let id = field("id")?;
    let keys = match v.get("keys") {
        None => Vec::new(),
        Some(Value::Array(keys)) => keys
            .iter()
            .map(|k| k.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                CliError::Usage(format!("{}: `keys` must be strings", path.display()))
            })?,
        Some(_) => {
            return Err(CliError::Usage(format!(
                "{}: `keys` must be an array",
                path.display()
            )))
        }
    };
    Ok(Delivery {
        id: format!("{id}-check"),
        attempt: 1,
        event_id: id,
        event_type: field("type")?,
        keys,
        payload: v.get("payload").unwrap_or(&Value::Null).to_string(),
    })
}

fn outcome_json(o: &Outcome) -> Value {
    match o {
        Outcome::Done => json!({"kind": "done"}),
        Outcome::Retry { after, reason } => json!({
            "kind": "retry",
            "reason": reason,
            "after_ms": after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }),
        Outcome::Reject { reason } => json!({"kind": "reject", "reason": reason}),
        Outcome::Busy { reason } => json!({"kind": "busy", "reason": reason}),
    }
}

fn text_of(v: &Value) -> String {
    let mut out = format!(
        "{} {}: loads; {} slot(s) per call",
        v["name"].as_str().unwrap_or_default(),
        v["version"].as_str().unwrap_or_default(),
        v["footprint"]["slots"]
    );
    for c in v["config"].as_array().into_iter().flatten() {
        let required = if c["required"] == true {
            " (required)"
        } else {
            ""
        };
        out.push_str(&format!(
            "\n  config {}{required}: {}",
            c["name"].as_str().unwrap_or_default(),
            c["description"].as_str().unwrap_or_default()
        ));
    }
    if let Some(o) = v.get("outcome") {
        out.push_str(&format!(
            "\noutcome: {}",
            o["kind"].as_str().unwrap_or_default()
        ));
        if let Some(reason) = o["reason"].as_str() {
            out.push_str(&format!(": {reason}"));
        }
        if let Some(ms) = o["after_ms"].as_u64() {
            out.push_str(&format!(" (not before {ms} ms)"));
        }
    }
    out
}
