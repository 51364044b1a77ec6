//! Shared test helpers: a fresh store per test, events built tersely.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use switchboard::queue::event::parse_body;
use switchboard::store::sqlite::{LaneFlush, SqliteStore};
use switchboard::store::{self, Routed, Store};

pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub url: String,
    /// A SQLite store opened with these lane-flush thresholds (and reopened
    /// with them).
    flush: Option<LaneFlush>,
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    /// Drops the store (as a crash would: no shutdown) and opens it again.
    pub async fn reopen(&mut self) {
        // Give the writer thread a moment to see its channel close.
        let url = self.url.clone();
        self.store = match self.flush {
            Some(flush) => Arc::new(
                SqliteStore::open_tuned(&url, &store::default_node(), flush, None)
                    .await
                    .expect("reopen store"),
            ),
            None => store::open(&url).await.expect("reopen store"),
        };
    }

    /// Rows in `table`, read past the `Store` boundary (for checking what
    /// the store keeps on disk).
    pub async fn count_rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        if self.url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
            sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap()
        } else {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap()
        }
    }
}

impl TestStore {
    /// SQLite keeps a `pending` flag beside `state` so that moves between
    /// pending states leave its pending index alone; every statement that
    /// makes a delivery final, or brings it back from dead, must set it.
    /// Deliveries whose flag disagrees with their state (always 0 on
    /// PostgreSQL, which has no such flag).
    pub async fn pending_flag_mismatches(&self) -> i64 {
        if !self.url.starts_with("sqlite:") {
            return 0;
        }
        self.count_rows("deliveries WHERE pending != (state IN ('blocked', 'ready', 'in_flight'))")
            .await
    }
}

impl TestStore {
    /// Where the maintained per-connector counts (`connector_counts`, summed
    /// over writers) disagree with the rows: one line per (connector, state)
    /// that differs, empty when they agree.
    pub async fn count_mismatches(&self) -> Vec<String> {
        use switchboard::queue::DeliveryState;
        let states: Vec<&str> = DeliveryState::ALL.iter().map(|s| s.as_str()).collect();
        let counted = format!(
            "SELECT connector, {} FROM connector_counts GROUP BY connector",
            states
                .iter()
                .map(|s| format!("CAST(SUM({s}) AS BIGINT)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows = format!(
            "SELECT connector, {} FROM deliveries GROUP BY connector",
            states
                .iter()
                .map(|s| format!("COUNT(*) FILTER (WHERE state = '{s}')"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        async fn read<'c, E>(e: E, sql: &str) -> std::collections::BTreeMap<String, Vec<i64>>
        where
            E: sqlx::Executor<'c> + Copy,
            for<'r> String: sqlx::Decode<'r, E::Database> + sqlx::Type<E::Database>,
            for<'r> i64: sqlx::Decode<'r, E::Database> + sqlx::Type<E::Database>,
            for<'q> <E::Database as sqlx::Database>::Arguments<'q>:
                sqlx::IntoArguments<'q, E::Database>,
            usize: sqlx::ColumnIndex<<E::Database as sqlx::Database>::Row>,
        {
            use sqlx::Row;
            let n = DeliveryState::ALL.len();
            sqlx::query(sql)
                .fetch_all(e)
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    let c: String = r.get(0);
                    (c, (1..=n).map(|i| r.get::<i64, _>(i)).collect())
                })
                .collect()
        }
        let (counted, rows) = if self.url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
            (read(&pool, &counted).await, read(&pool, &rows).await)
        } else {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            (read(&pool, &counted).await, read(&pool, &rows).await)
        };
        let zero = vec![0; states.len()];
        let mut out = Vec::new();
        for c in counted
            .keys()
            .chain(rows.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let a = counted.get(c).unwrap_or(&zero);
            let b = rows.get(c).unwrap_or(&zero);
            for (i, state) in states.iter().enumerate() {
                if a[i] != b[i] {
                    out.push(format!("{c}/{state}: counted {} but {} rows", a[i], b[i]));
                }
            }
        }
        out
    }
}

/// A fresh, empty SQLite store in its own directory.
pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sb.db").display());
    TestStore {
        store: store::open(&url).await.unwrap(),
        url,
        flush: None,
        _dir: Some(dir),
    }
}

/// A fresh SQLite store whose writer moves the lane entries it holds in
/// memory into `lane_entries` after every few deliveries, a couple of lanes
/// per commit, so that lanes mix entries held in memory with entries in the
/// table and a flush is nearly always under way. Its filter of the lanes in
/// the table has eight slots, so lanes share slots all the time and its
/// "maybe" is wrong as often as right, and it remembers two lanes found in
/// the table, so it forgets them all the time.
pub async fn sqlite_flushing() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sb.db").display());
    let flush = LaneFlush {
        entries: 3,
        deliveries: 4,
        slice: 2,
        filter_slots: 8,
        known_lanes: 2,
    };
    TestStore {
        store: Arc::new(
            SqliteStore::open_tuned(&url, &store::default_node(), flush, None)
                .await
                .unwrap(),
        ),
        url,
        flush: Some(flush),
        _dir: Some(dir),
    }
}

/// The PostgreSQL server the tests use: `SWITCHBOARD_TEST_PG`, else
/// `DATABASE_URL`, else the local default. Tests that need it fail (never
/// skip) when it cannot be reached.
pub fn pg_base_url() -> String {
    std::env::var("SWITCHBOARD_TEST_PG")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh, empty PostgreSQL store: its own schema on the test server, so
/// tests run in parallel without seeing each other.
pub async fn postgres() -> TestStore {
    let url = pg_schema_url().await;
    TestStore {
        store: store::open(&url).await.unwrap(),
        url,
        flush: None,
        _dir: None,
    }
}

/// The URL of a new, empty schema on the test server. Schemas of earlier
/// runs older than an hour are dropped on the way.
pub async fn pg_schema_url() -> String {
    use sqlx::Connection;
    let base = pg_base_url();
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL tests need a server at {base} (set SWITCHBOARD_TEST_PG or \
             DATABASE_URL): {e}"
            )
        });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'sbt\\_%' \
         AND split_part(nspname, '_', 2)::bigint < $1",
    )
    .bind((now - 3600) as i64)
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    for schema in stale {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await;
    }
    let schema = format!("sbt_{now}_{:08x}", rand::random::<u32>());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options[search_path]={schema}")
}

/// Generates, for each `async fn name(t: TestStore)` listed, one test per
/// backend: `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::sqlite().await).await
                }
            )*
        }
        /// SQLite with lane entries moved from memory to the table every
        /// few deliveries.
        mod sqlite_flushing {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::sqlite_flushing().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::postgres().await).await
                }
            )*
        }
    };
}

/// A connector as a config file would declare it, with defaults for
/// everything but its name and routes.
pub fn connector(name: &str, routes: &[&str]) -> switchboard::config::ConnectorConfig {
    serde_json::from_value(serde_json::json!({"name": name, "routes": routes})).unwrap()
}

/// The connectors an API under test serves: `(name, routes)`.
pub fn fleet(connectors: &[(&str, &[&str])]) -> switchboard::fleet::Fleet {
    let configs = connectors
        .iter()
        .map(|(name, routes)| connector(name, routes))
        .collect();
    switchboard::fleet::Fleet::new(configs, switchboard::config::Bounds::default())
}

pub fn ev(id: &str, ty: &str, keys: &[&str], connectors: &[&str]) -> Routed {
    let body = serde_json::json!({"id": id, "type": ty, "keys": keys, "payload": {"id": id}});
    let mut events = parse_body(body.to_string().as_bytes(), 1).unwrap();
    Routed::new(
        events.remove(0),
        connectors.iter().map(|c| c.to_string()).collect(),
    )
}
