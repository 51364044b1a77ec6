-- The records the next features read, added in one step so that the hot
-- tables change once.

-- One row per finished attempt: when it ran, on which node, how it ended
-- and why. The console's timelines read it; it goes with its delivery when
-- the event is purged.
CREATE TABLE attempts (
    delivery_id BIGINT NOT NULL,
    attempt     INTEGER NOT NULL,              -- 1 for the first
    node        TEXT    NOT NULL,
    started_at  BIGINT  NOT NULL,
    finished_at BIGINT  NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('delivered', 'retry', 'dead', 'lease_expired')),
    reason      TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
CREATE INDEX attempts_finished ON attempts (finished_at);

-- Every change of a connector's circuit breaker, as the node that saw it.
CREATE TABLE breaker_transitions (
    id         BIGSERIAL PRIMARY KEY,
    connector  TEXT   NOT NULL,
    node       TEXT   NOT NULL,
    at         BIGINT NOT NULL,
    from_state TEXT   NOT NULL,
    to_state   TEXT   NOT NULL
);
CREATE INDEX breaker_transitions_connector ON breaker_transitions (connector, id);

-- The later delivery that replaced this one (coalescing, SPEC §3).
ALTER TABLE deliveries ADD COLUMN superseded_by BIGINT;

-- The gateway processes that use this store: a new epoch each time one
-- starts under a name, and a heartbeat while it runs.
CREATE TABLE nodes (
    name         TEXT   PRIMARY KEY,
    epoch        BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- Deliveries per connector and state, kept up to date in the transaction
-- that moves them, so that metrics and listings never count rows. Each
-- writer (a node's group-commit worker, its claimer, its rescuer) adds to
-- its own row, so that writers never wait on each other's row lock; a
-- connector's count is the sum of its rows.
CREATE TABLE connector_counts (
    connector  TEXT    NOT NULL,
    writer     TEXT    NOT NULL,
    blocked    BIGINT  NOT NULL DEFAULT 0,
    ready      BIGINT  NOT NULL DEFAULT 0,
    in_flight  BIGINT  NOT NULL DEFAULT 0,
    delivered  BIGINT  NOT NULL DEFAULT 0,
    dead       BIGINT  NOT NULL DEFAULT 0,
    superseded BIGINT  NOT NULL DEFAULT 0,
    skipped    BIGINT  NOT NULL DEFAULT 0,
    expired    BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (connector, writer)
);
INSERT INTO connector_counts (connector, writer, blocked, ready, in_flight, delivered, dead, superseded, skipped, expired)
SELECT connector, '',
       COUNT(*) FILTER (WHERE state = 'blocked'),
       COUNT(*) FILTER (WHERE state = 'ready'),
       COUNT(*) FILTER (WHERE state = 'in_flight'),
       COUNT(*) FILTER (WHERE state = 'delivered'),
       COUNT(*) FILTER (WHERE state = 'dead'),
       COUNT(*) FILTER (WHERE state = 'superseded'),
       COUNT(*) FILTER (WHERE state = 'skipped'),
       COUNT(*) FILTER (WHERE state = 'expired')
FROM deliveries GROUP BY connector;
