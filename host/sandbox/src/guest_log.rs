//! Guest output → `tracing`, bounded.
//!
//! A connector's stdout, stderr and `log` calls become tracing events tagged
//! with `connector` and `delivery_id`. Invariants:
//! - At most `budget` bytes per call reach the log; the rest is counted and
//!   reported once, so a chatty or hostile guest cannot flood the host's logs
//!   or memory.
//! - The last few stderr lines are kept (bounded) so a trap's retry reason can
//!   carry the guest's panic message.
//! - Writes never fail: output past the budget is dropped, not an error the
//!   guest could trip over.
//! - Guest text is never written raw: it is logged as the `text` field,
//!   quoted with newlines, control characters and terminal escapes escaped,
//!   so a connector cannot forge a gateway log line or drive an operator's
//!   terminal. Text that reaches retry reasons is escaped the same way.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest single line logged; longer lines are cut.
const MAX_LINE: usize = 2048;
/// stderr lines kept for retry reasons.
const TAIL_LINES: usize = 4;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Stdout,
    Stderr,
}

/// Log levels, mirroring the WIT `log.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

struct Inner {
    connector: Arc<str>,
    delivery_id: Arc<str>,
    budget: usize,
    dropped: usize,
    partial: [Vec<u8>; 2],
    tail: VecDeque<String>,
}

/// Shared per-call log state; cheap to clone.
#[derive(Clone)]
pub(crate) struct GuestLog(Arc<Mutex<Inner>>);

impl GuestLog {
    pub(crate) fn new(connector: Arc<str>, delivery_id: Arc<str>, budget: usize) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            connector,
            delivery_id,
            budget,
            dropped: 0,
            partial: [Vec::new(), Vec::new()],
            tail: VecDeque::new(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock can only come from tracing itself;
        // the data is still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the log over for the next call of a warm instance: its
    /// delivery id, a full budget, no partial lines, no stderr tail.
    pub(crate) fn rearm(&self, delivery_id: Arc<str>, budget: usize) {
        let mut inner = self.lock();
        inner.delivery_id = delivery_id;
        inner.budget = budget;
        inner.dropped = 0;
        inner.partial = [Vec::new(), Vec::new()];
        inner.tail.clear();
    }

    /// A `log` call from the guest.
    pub(crate) fn log(&self, level: Level, message: &str) {
        self.lock().emit(level, None, message);
    }

    /// A stdout/stderr stream for `WasiCtxBuilder`.
    pub(crate) fn stream(&self, source: Source) -> GuestStream {
        GuestStream {
            log: self.clone(),
            source,
        }
    }

    /// Flush partial lines and report dropped output. Call once per call.
    pub(crate) fn finish(&self) {
        let mut inner = self.lock();
        for source in [Source::Stdout, Source::Stderr] {
            let idx = source as usize;
            if !inner.partial[idx].is_empty() {
                let line = std::mem::take(&mut inner.partial[idx]);
                let text = String::from_utf8_lossy(&line).into_owned();
                inner.line(source, &text);
            }
        }
        if inner.dropped > 0 {
            tracing::warn!(
                connector = %inner.connector,
                delivery_id = %inner.delivery_id,
                dropped_bytes = inner.dropped,
                "connector output over the per-call log budget was dropped"
            );
        }
    }

    /// The last stderr lines, joined, for a retry reason.
    pub(crate) fn stderr_tail(&self) -> Option<String> {
        let inner = self.lock();
        (!inner.tail.is_empty()).then(|| inner.tail.iter().cloned().collect::<Vec<_>>().join(" | "))
    }

    fn write(&self, source: Source, buf: &[u8]) {
        let mut inner = self.lock();
        let idx = source as usize;
        let mut rest = buf;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(pos);
            let mut line = std::mem::take(&mut inner.partial[idx]);
            line.extend_from_slice(&head[..head.len().min(MAX_LINE.saturating_sub(line.len()))]);
            let text = String::from_utf8_lossy(&line).into_owned();
            inner.line(source, &text);
            rest = &tail[1..];
        }
        let partial = &mut inner.partial[idx];
        let room = MAX_LINE.saturating_sub(partial.len());
        partial.extend_from_slice(&rest[..rest.len().min(room)]);
    }
}

impl Inner {
    fn line(&mut self, source: Source, text: &str) {
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        if source == Source::Stderr {
            if self.tail.len() == TAIL_LINES {
                self.tail.pop_front();
            }
            self.tail.push_back(escape(cut(text, 512)));
        }
        let level = match source {
            Source::Stdout => Level::Info,
            Source::Stderr => Level::Warn,
        };
        self.emit(level, Some(source), text);
    }

    fn emit(&mut self, level: Level, source: Option<Source>, message: &str) {
        let message = cut(message, MAX_LINE);
        if message.len() > self.budget {
            self.dropped += message.len();
            return;
        }
        self.budget -= message.len();
        let stream = match source {
            None => "log",
            Some(Source::Stdout) => "stdout",
            Some(Source::Stderr) => "stderr",
        };
        let (c, d) = (&*self.connector, &*self.delivery_id);
        // `?` quotes and escapes the guest's text (Rust string escapes).
        match level {
            Level::Trace => {
                tracing::trace!(connector = c, delivery_id = d, stream, text = ?message, "connector output")
            }
            Level::Debug => {
                tracing::debug!(connector = c, delivery_id = d, stream, text = ?message, "connector output")
            }
            Level::Info => {
                tracing::info!(connector = c, delivery_id = d, stream, text = ?message, "connector output")
            }
            Level::Warn => {
                tracing::warn!(connector = c, delivery_id = d, stream, text = ?message, "connector output")
            }
            Level::Error => {
                tracing::error!(connector = c, delivery_id = d, stream, text = ?message, "connector output")
            }
        }
    }
}

/// `s` on one line with nothing a terminal acts on: control characters
/// (newlines, escape sequences, carriage returns, Unicode line
/// separators) become Rust escapes such as `\n` and `\u{1b}`.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Cut `s` to at most `max` bytes on a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One guest output stream (stdout or stderr).
#[derive(Clone)]
pub(crate) struct GuestStream {
    log: GuestLog,
    source: Source,
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.log.write(self.source, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_stderr_tail_and_respects_budget() {
        let log = GuestLog::new("c".into(), "d".into(), 64);
        log.write(Source::Stderr, b"thread panicked at src/lib.rs:\nboom");
        log.write(Source::Stderr, b" again\n");
        log.finish();
        assert_eq!(
            log.stderr_tail().as_deref(),
            Some("thread panicked at src/lib.rs: | boom again")
        );
        let big = "x".repeat(100);
        log.log(Level::Info, &big);
        assert_eq!(log.lock().dropped, 100);
    }

    #[test]
    fn guest_text_cannot_forge_log_lines_or_drive_a_terminal() {
        let forged = "ok\n2026-01-01T00:00:00Z ERROR switchboard: store corrupted\x1b[2J\r";
        let escaped = escape(forged);
        assert!(!escaped.contains(['\n', '\r', '\x1b']), "{escaped}");
        assert!(
            escaped.contains("\\n2026") && escaped.contains("\\u{1b}[2J"),
            "{escaped}"
        );
        assert_eq!(escape("plain text é"), "plain text é");

        let log = GuestLog::new("c".into(), "d".into(), 1024);
        log.write(Source::Stderr, b"boom\x1b[31m red\n");
        assert_eq!(log.stderr_tail().as_deref(), Some("boom\\u{1b}[31m red"));
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("éé", 3), "é");
        assert_eq!(cut("abc", 10), "abc");
    }
}
