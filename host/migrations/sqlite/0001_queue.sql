-- Events, their deliveries and the lanes that order them.
-- Times are milliseconds since the Unix epoch.

CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,      -- accept order; every lane orders by it
    id          TEXT    NOT NULL UNIQUE,  -- the client's id: idempotency
    type        TEXT    NOT NULL,
    keys        TEXT    NOT NULL,         -- JSON array of distinct keys
    payload     TEXT    NOT NULL,         -- canonical JSON
    digest      BLOB    NOT NULL,         -- sha256(type, keys, payload)
    accepted_at INTEGER NOT NULL
);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    event_seq       INTEGER NOT NULL,
    connector       TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN
                        ('blocked', 'ready', 'in_flight', 'delivered', 'dead', 'superseded', 'skipped')),
    -- lanes in which this delivery is not yet the head; ready only at 0
    blockers        INTEGER NOT NULL DEFAULT 0 CHECK (blockers >= 0),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    lease_token     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- Exactly the claim's filter and sort; partial, so it holds only runnable rows.
CREATE INDEX deliveries_claim ON deliveries (connector, next_attempt_at, id) WHERE state = 'ready';
-- The rescuer's scan for expired leases.
CREATE INDEX deliveries_lease ON deliveries (lease_until) WHERE state = 'in_flight';
-- Dead letters by connector, for operators.
CREATE INDEX deliveries_dead ON deliveries (connector, id) WHERE state = 'dead';
CREATE INDEX deliveries_event ON deliveries (event_seq);

-- One row per (connector, key) a not-yet-released delivery is in. Rows are
-- deleted on release, so this table grows with pending work, never with the
-- number of keys ever seen.
CREATE TABLE lane_entries (
    connector   TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    delivery_id INTEGER NOT NULL,
    PRIMARY KEY (connector, key, seq)
) WITHOUT ROWID;
