//! The operator CLI: talks to a running gateway over its HTTP API.
//!
//! Text for people by default, `--format json` for scripts. Exit codes:
//! 0 success, 1 the gateway refused the request (the error is printed), the
//! output could not be written or the command could not start, 2 bad usage,
//! 3 the gateway could not be reached.
//!
//! - [`commands`]: one function per command, taking the arguments clap
//!   parsed for it and failing with a [`CliError`], which carries the exit
//!   code. `main.rs` only parses, calls the function and exits.
//! - this module: the [`Client`] every command asks the gateway through, and
//!   [`emit`], the one way output reaches stdout.
//! - [`table`]: what people read, [`Table`] and the text of each API answer.
//!
//! Output is the same whether a person or a pipe reads it, and holds no
//! escape codes: lists are [`Table`]s (columns as wide as their widest
//! cell, numbers right-aligned under their header), every value is put on
//! one line with its control characters removed, and a reader that goes away
//! early (`| head`) ends the output, not the process with a panic. Only
//! `status` on a terminal redraws the screen (in [`commands`]), and the
//! gateway's log is coloured only on a terminal without `NO_COLOR` (in
//! `main.rs`).

pub mod check;
pub mod commands;
pub mod table;

pub use table::{Align, Table};

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// A failed CLI call, with the exit code scripts rely on.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the gateway at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Refused(_) | CliError::Output(_) | CliError::Runtime(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
        }
    }
}

/// What the operator commands print: `text` for people, `json` (the API's own
/// answer) for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    pub format: Format,
}

impl Client {
    pub fn new(base: &str, format: Format, token: Option<String>) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            token,
            format,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let code = body["error"]["code"].as_str().unwrap_or("error");
        let message = body["error"]["message"].as_str().unwrap_or("(no message)");
        Err(CliError::Refused(format!("{status} {code}: {message}")))
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post_json(&self, path: &str, body: Vec<u8>) -> Result<Value, CliError> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        self.send(req).await
    }

    pub async fn put_bytes(&self, path: &str, body: Vec<u8>) -> Result<Value, CliError> {
        let req = self
            .http
            .put(format!("{}{path}", self.base))
            .header("content-type", "application/wasm")
            .body(body);
        self.send(req).await
    }

    pub async fn put_json(&self, path: &str, body: Vec<u8>) -> Result<Value, CliError> {
        let req = self
            .http
            .put(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        self.send(req).await
    }

    pub async fn post_empty(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.post(format!("{}{path}", self.base)))
            .await
    }

    /// Whether `--format json` (or `--json`) was given.
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Prints `value` as JSON with `--format json`, else through `human`.
    pub fn print(
        &self,
        value: &Value,
        human: impl FnOnce(&Value) -> String,
    ) -> Result<(), CliError> {
        match self.format {
            Format::Json => emit(&serde_json::to_string_pretty(value).unwrap_or_default()),
            Format::Text => emit(&human(value)),
        }
    }
}

/// Writes `text` and a newline to stdout. A reader that has gone (`| head`,
/// a pager quit early) is not an error: nobody is left to tell, and the
/// command's effect on the gateway has happened either way.
pub fn emit(text: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.map_err(CliError::Output),
    }
}

/// `/v1/<a>/<b>…` with each segment percent-encoded (event ids may hold `/`,
/// `?`, spaces).
pub fn path(segments: &[&str]) -> String {
    let mut url = match reqwest::Url::parse("http://x/") {
        Ok(u) => u,
        Err(_) => return String::new(),
    };
    if let Ok(mut p) = url.path_segments_mut() {
        p.pop_if_empty().extend(segments);
    }
    url.path().to_string()
}

/// `?a=1&b=x%20y` from pairs, values percent-encoded.
pub fn query(pairs: &[(&str, String)]) -> String {
    let mut url = match reqwest::Url::parse("http://x/") {
        Ok(u) => u,
        Err(_) => return String::new(),
    };
    url.query_pairs_mut()
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    url.query().map(|q| format!("?{q}")).unwrap_or_default()
}

pub fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path(&["v1", "events", "a/b c?"]), "/v1/events/a%2Fb%20c%3F");
    }
}
