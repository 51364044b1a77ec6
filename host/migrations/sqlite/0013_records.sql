-- The records the next features read, added in one step so that the hot
-- tables change once.

-- One row per finished attempt: when it ran, on which node, how it ended
-- and why. The console's timelines read it; it goes with its delivery when
-- the event is purged.
CREATE TABLE attempts (
    delivery_id INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,              -- 1 for the first
    node        TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('delivered', 'retry', 'dead', 'lease_expired')),
    reason      TEXT,
    PRIMARY KEY (delivery_id, attempt)
) WITHOUT ROWID;
CREATE INDEX attempts_finished ON attempts (finished_at);

-- Every change of a connector's circuit breaker, as the node that saw it.
CREATE TABLE breaker_transitions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    connector  TEXT    NOT NULL,
    node       TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    from_state TEXT    NOT NULL,
    to_state   TEXT    NOT NULL
);
CREATE INDEX breaker_transitions_connector ON breaker_transitions (connector, id);

-- The later delivery that replaced this one (coalescing, SPEC §3).
ALTER TABLE deliveries ADD COLUMN superseded_by INTEGER;

-- The gateway processes that use this store: a new epoch each time one
-- starts under a name, and a heartbeat while it runs.
CREATE TABLE nodes (
    name         TEXT    PRIMARY KEY,
    epoch        INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);

-- Deliveries per connector and state, kept up to date in the transaction
-- that moves them, so that metrics and listings never count rows. Each
-- writer adds to its own row (`writer`); a connector's count is the sum.
CREATE TABLE connector_counts (
    connector  TEXT    NOT NULL,
    writer     TEXT    NOT NULL,
    blocked    INTEGER NOT NULL DEFAULT 0,
    ready      INTEGER NOT NULL DEFAULT 0,
    in_flight  INTEGER NOT NULL DEFAULT 0,
    delivered  INTEGER NOT NULL DEFAULT 0,
    dead       INTEGER NOT NULL DEFAULT 0,
    superseded INTEGER NOT NULL DEFAULT 0,
    skipped    INTEGER NOT NULL DEFAULT 0,
    expired    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (connector, writer)
) WITHOUT ROWID;
INSERT INTO connector_counts (connector, writer, blocked, ready, in_flight, delivered, dead, superseded, skipped, expired)
SELECT connector, '',
       SUM(state = 'blocked'),
       SUM(state = 'ready'),
       SUM(state = 'in_flight'),
       SUM(state = 'delivered'),
       SUM(state = 'dead'),
       SUM(state = 'superseded'),
       SUM(state = 'skipped'),
       SUM(state = 'expired')
FROM deliveries GROUP BY connector;
