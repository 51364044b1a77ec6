-- Cluster-wide connector health and rate (schema parity with PostgreSQL,
-- where several nodes share them). A SQLite store has one node, which keeps
-- its breaker and token bucket in memory, so these tables stay empty here.
CREATE TABLE connector_health (
    connector         TEXT    PRIMARY KEY,
    open              INTEGER NOT NULL CHECK (open IN (0, 1)),
    next_probe_at     INTEGER NOT NULL,
    probe_interval_ms INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

CREATE TABLE connector_tokens (
    connector    TEXT    PRIMARY KEY,
    tokens       REAL    NOT NULL,
    refreshed_at INTEGER NOT NULL
);
