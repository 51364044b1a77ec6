//! The SQLite writer's own connection: synchronous, on the writer's thread.
//!
//! sqlx runs every SQLite statement on a worker thread of its own and hands
//! each one over through a channel; a transaction of N statements costs
//! about 2N thread switches, and when events trickle in every switch is a
//! full sleep and wake-up (docs/benchmarks-history.md). The writer runs its
//! commit groups instead on a thread that owns this connection, so a whole
//! transaction costs one hand-off in and one answer out.
//!
//! It is rusqlite over the same `libsqlite3-sys` (and so the same SQLite)
//! that sqlx links. The small API below is shaped like sqlx's — [`query`]
//! with `bind`, [`Builder`] with `push_values` and `separated` — so that
//! statements read the same on either connection: `?NNN` and `$NNN`
//! parameters are bound by their number, anonymous `?` in order.

use rusqlite::types::{FromSql, ToSql, ToSqlOutput, Value};
use rusqlite::{Connection, OpenFlags};

use super::{StoreError, StoreResult};

impl From<rusqlite::Error> for StoreError {
    /// As for sqlx's errors: unavailable only where waiting can help,
    /// undecodable rows corrupt, the rest internal.
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::Error as E;
        let text = e.to_string();
        match &e {
            E::SqliteFailure(f, _) => {
                let code = f.extended_code.to_string();
                if super::transient_database_error(false, Some(&code)) {
                    StoreError::Unavailable(text)
                } else {
                    StoreError::Internal(text)
                }
            }
            E::FromSqlConversionFailure(..)
            | E::IntegralValueOutOfRange(..)
            | E::InvalidColumnType(..)
            | E::Utf8Error(_) => StoreError::Corrupt(text),
            _ => StoreError::Internal(text),
        }
    }
}

/// Opens the database file `path` for the writer (it exists: migrations ran
/// on it) with the settings every connection of the store has, and a cache
/// of `statements` prepared statements. `path` is as sqlx names it: an
/// in-memory database is shared with sqlx's connections by that name.
pub(crate) fn open(
    path: &std::path::Path,
    in_memory: bool,
    statements: usize,
) -> StoreResult<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if in_memory {
        flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
    }
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.set_prepared_statement_cache_capacity(statements);
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;",
    )?;
    Ok(conn)
}

/// A statement and its arguments.
pub(crate) struct Query {
    sql: String,
    args: Vec<Value>,
    /// An argument that could not be turned into a value (reported when
    /// the statement runs).
    bad: Option<rusqlite::Error>,
}

/// A statement of fixed text, bound with [`Query::bind`].
pub(crate) fn query(sql: &str) -> Query {
    Builder::new(sql).build()
}

fn value_of(v: &dyn ToSql) -> rusqlite::Result<Value> {
    Ok(match v.to_sql()? {
        ToSqlOutput::Borrowed(r) => r.into(),
        ToSqlOutput::Owned(v) => v,
        // Not produced by the types bound here (zero blobs, arrays).
        _ => return Err(rusqlite::Error::InvalidQuery),
    })
}

impl Query {
    pub(crate) fn bind<T: ToSql>(mut self, v: T) -> Self {
        self.push_arg(&v);
        self
    }

    fn push_arg(&mut self, v: &dyn ToSql) {
        let value = value_of(v).unwrap_or_else(|e| {
            self.bad.get_or_insert(e);
            Value::Null
        });
        self.args.push(value);
    }

    /// Prepares (from the cache) and binds: `$NNN` by its number (SQLite
    /// numbers those by first appearance), `?NNN` and `?` by index.
    fn prepare<'c>(&self, conn: &'c Connection) -> StoreResult<rusqlite::CachedStatement<'c>> {
        if let Some(e) = &self.bad {
            return Err(StoreError::Internal(format!(
                "cannot bind an argument: {e}"
            )));
        }
        let mut stmt = conn.prepare_cached(&self.sql)?;
        for i in 1..=stmt.parameter_count() {
            let n = match stmt.parameter_name(i) {
                Some(name) if name.starts_with('$') => name[1..].parse().unwrap_or(i),
                _ => i,
            };
            let arg = self.args.get(n - 1).ok_or_else(|| {
                StoreError::Internal(format!(
                    "statement has parameter {n} but {} arguments: {}",
                    self.args.len(),
                    self.sql
                ))
            })?;
            stmt.raw_bind_parameter(i, arg)?;
        }
        Ok(stmt)
    }

    /// Runs it; how many rows it changed.
    pub(crate) fn execute(self, conn: &Connection) -> StoreResult<u64> {
        Ok(self.prepare(conn)?.raw_execute()? as u64)
    }

    /// Runs it and reads every row it returns.
    pub(crate) fn fetch_all<T: FromRow>(&self, conn: &Connection) -> StoreResult<Vec<T>> {
        let mut stmt = self.prepare(conn)?;
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(T::from_row(row)?);
        }
        Ok(out)
    }

    /// Runs it and reads its first row, if any; runs it to the end, so a
    /// `RETURNING` statement changes every row it names.
    pub(crate) fn fetch_optional<T: FromRow>(self, conn: &Connection) -> StoreResult<Option<T>> {
        Ok(self.fetch_all(conn)?.into_iter().next())
    }

    /// Runs it and reads its first row, which must be there.
    pub(crate) fn fetch_one<T: FromRow>(self, conn: &Connection) -> StoreResult<T> {
        let row = self.fetch_all(conn)?.into_iter().next();
        row.ok_or_else(|| {
            StoreError::Internal(format!("no row where one was expected: {}", self.sql))
        })
    }
}

/// A statement put together piece by piece, as sqlx's `QueryBuilder`:
/// every bound value is an anonymous `?`.
pub(crate) struct Builder(Query);

impl Builder {
    pub(crate) fn new(init: impl Into<String>) -> Self {
        Self(Query {
            sql: init.into(),
            args: Vec::new(),
            bad: None,
        })
    }

    pub(crate) fn push(&mut self, sql: impl std::fmt::Display) -> &mut Self {
        use std::fmt::Write;
        let _ = write!(self.0.sql, "{sql}");
        self
    }

    pub(crate) fn push_bind<T: ToSql>(&mut self, v: T) -> &mut Self {
        self.0.sql.push('?');
        self.0.push_arg(&v);
        self
    }

    /// `VALUES (…), (…)`, one tuple per item, its values bound by `row`.
    pub(crate) fn push_values<I: IntoIterator>(
        &mut self,
        items: I,
        mut row: impl FnMut(Separated<'_>, I::Item),
    ) -> &mut Self {
        self.0.sql.push_str("VALUES ");
        for (n, item) in items.into_iter().enumerate() {
            if n > 0 {
                self.0.sql.push_str(", ");
            }
            self.0.sql.push('(');
            row(self.separated(", "), item);
            self.0.sql.push(')');
        }
        self
    }

    /// Values bound one after another with `sep` between them.
    pub(crate) fn separated(&mut self, sep: &'static str) -> Separated<'_> {
        Separated {
            builder: self,
            sep,
            first: true,
        }
    }

    pub(crate) fn build(self) -> Query {
        self.0
    }
}

/// Binds values into a [`Builder`] with a separator between them.
pub(crate) struct Separated<'b> {
    builder: &'b mut Builder,
    sep: &'static str,
    first: bool,
}

impl Separated<'_> {
    pub(crate) fn push_bind<T: ToSql>(&mut self, v: T) -> &mut Self {
        if !self.first {
            self.builder.0.sql.push_str(self.sep);
        }
        self.first = false;
        self.builder.push_bind(v);
        self
    }
}

/// A row read back: a single column's value, or a tuple of them.
pub(crate) trait FromRow: Sized {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
}

macro_rules! scalar_rows {
    ($($t:ty),*) => {$(
        impl FromRow for $t {
            fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                row.get(0)
            }
        }
    )*};
}
scalar_rows!(i64, bool, String, Vec<u8>, Option<i64>, Option<String>);

macro_rules! tuple_rows {
    ($($t:ident $i:tt),+) => {
        impl<$($t: FromSql),+> FromRow for ($($t,)+) {
            fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                Ok(($(row.get::<_, $t>($i)?,)+))
            }
        }
    };
}
tuple_rows!(A 0, B 1);
tuple_rows!(A 0, B 1, C 2);
tuple_rows!(A 0, B 1, C 2, D 3);
tuple_rows!(A 0, B 1, C 2, D 3, E 4);
tuple_rows!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_rows!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_rows!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple_rows!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple_rows!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_bind_by_number_whatever_their_form() {
        let conn = Connection::open_in_memory().unwrap();
        let row: (i64, String, i64) = query("SELECT $2, $1, ?3")
            .bind("a")
            .bind(7_i64)
            .bind(9_i64)
            .fetch_one(&conn)
            .unwrap();
        assert_eq!(row, (7, "a".to_string(), 9));
        let mut b = Builder::new("SELECT v.column1, v.column2 FROM (");
        b.push_values([(1_i64, "x"), (2, "y")], |mut r, (n, s)| {
            r.push_bind(n).push_bind(s);
        });
        b.push(") AS v WHERE v.column1 > ").push_bind(1_i64);
        let rows: Vec<(i64, String)> = b.build().fetch_all(&conn).unwrap();
        assert_eq!(rows, vec![(2, "y".to_string())]);
        let missing = query("SELECT ?2").bind(1_i64).fetch_one::<i64>(&conn);
        assert!(
            matches!(missing, Err(StoreError::Internal(_))),
            "{missing:?}"
        );
    }

    #[test]
    fn a_busy_database_is_unavailable_and_a_constraint_a_bug() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(matches!(StoreError::from(busy), StoreError::Unavailable(_)));
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY); INSERT INTO t VALUES (1)")
            .unwrap();
        let dup = query("INSERT INTO t VALUES (1)").execute(&conn);
        assert!(matches!(dup, Err(StoreError::Internal(_))), "{dup:?}");
    }
}
