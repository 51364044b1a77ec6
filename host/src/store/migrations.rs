//! Schema migrations, embedded in the binary and applied at start.
//!
//! sqlx's `migrate!` macro would list the directory at compile time, but it
//! is a procedural macro that builds a second copy of sqlx (every driver,
//! SQLite's C sources included) just to read a few files. Listing the files
//! here costs one line per migration; `every_file_is_listed` fails when a
//! file is added to a directory and not here. The migrations are the same
//! values the macro produces (version, description, SHA-384 checksum), so a
//! database migrated by either is accepted by the other.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

/// `(file stem, SQL)` for each file of `host/migrations/<dir>`, in order.
macro_rules! embed {
    ($dir:literal: $($stem:literal),+ $(,)?) => {
        &[$((
            $stem,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $dir, "/", $stem, ".sql")),
        )),+]
    };
}

/// `embed!` of the migrations both backends have, numbered alike, with
/// each backend's own in their place (`[…]` before 0014, `[…]` after the
/// last shared one).
macro_rules! embed_with_shared {
    ($dir:literal, [$($own:literal),* $(,)?], [$($after:literal),* $(,)?] $(,)?) => {
        embed!($dir:
            "0001_queue",
            "0002_components",
            "0003_audit",
            "0004_pending_index",
            "0005_connector_controls",
            "0006_connector_limits",
            "0007_connector_health",
            "0008_connector_configs",
            "0009_lease_owner",
            "0010_expiry",
            $($own,)*
            "0014_minute_counts",
            "0015_coalesce",
            "0016_attempts_connector",
            "0017_replays",
            "0018_finished_ids",
            $($after,)*
        )
    };
}

/// The SQLite schema.
pub(super) const SQLITE: &[(&str, &str)] = embed_with_shared!(
    "sqlite",
    ["0011_pending_flag", "0012_lane_watermark", "0013_records"],
    [],
);

/// The PostgreSQL schema.
pub(super) const POSTGRES: &[(&str, &str)] =
    embed_with_shared!("postgres", ["0013_records"], ["0019_vacuum_queue_tables"]);

/// A migrator over `files`. A stem that is not `<version>_<description>`
/// is a build mistake that `every_file_is_listed` catches (the versions it
/// compares would differ: such a stem is read as version 0).
pub(super) fn migrator(files: &'static [(&'static str, &'static str)]) -> Migrator {
    let migrations = files
        .iter()
        .map(|(stem, sql)| {
            let (version, description) = stem.split_once('_').unwrap_or(("0", stem));
            Migration::new(
                version.parse().unwrap_or(0),
                Cow::Owned(description.replace('_', " ")),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                sql.starts_with("-- no-transaction"),
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Version, description and checksum of every migration.
    fn summary(m: &Migrator) -> Vec<(i64, String, Vec<u8>)> {
        m.iter()
            .map(|m| (m.version, m.description.to_string(), m.checksum.to_vec()))
            .collect()
    }

    #[tokio::test]
    async fn every_file_is_listed() {
        let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        for (dir, files) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            // As sqlx's own directory resolver (the one behind `migrate!`)
            // reads the directory.
            let on_disk = summary(&Migrator::new(migrations.join(dir)).await.unwrap());
            assert!(on_disk.len() >= 10, "{dir}: {on_disk:?}");
            assert_eq!(
                summary(&migrator(files)),
                on_disk,
                "host/migrations/{dir} and store/migrations.rs disagree: list every file there, in order"
            );
        }
    }
}
