-- Events, their deliveries and the lanes that order them (PostgreSQL).
-- Same version numbers and shapes as migrations/sqlite; times are
-- milliseconds since the Unix epoch; every integer is BIGINT so both backends
-- decode alike.

-- The accept sequence. Values are taken only while the transaction holds the
-- advisory lock of every lane it writes to, so within one lane `seq` grows
-- with commit order, which is what makes the lanes deadlock-free.
CREATE SEQUENCE events_seq AS BIGINT;
CREATE SEQUENCE deliveries_id AS BIGINT;

CREATE TABLE events (
    seq         BIGINT  PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,  -- the client's id: idempotency
    type        TEXT    NOT NULL,
    keys        TEXT    NOT NULL,         -- JSON array of distinct keys
    payload     TEXT    NOT NULL,         -- canonical JSON
    digest      BYTEA   NOT NULL,         -- sha256(type, keys, payload)
    accepted_at BIGINT  NOT NULL
);

CREATE TABLE deliveries (
    id              BIGINT  PRIMARY KEY,
    event_seq       BIGINT  NOT NULL,
    connector       TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN
                        ('blocked', 'ready', 'in_flight', 'delivered', 'dead', 'superseded', 'skipped')),
    blockers        BIGINT  NOT NULL DEFAULT 0 CHECK (blockers >= 0),
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    lease_until     BIGINT,
    lease_token     BIGINT,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);

CREATE INDEX deliveries_claim ON deliveries (connector, next_attempt_at, id) WHERE state = 'ready';
CREATE INDEX deliveries_lease ON deliveries (lease_until) WHERE state = 'in_flight';
CREATE INDEX deliveries_dead ON deliveries (connector, id) WHERE state = 'dead';
CREATE INDEX deliveries_event ON deliveries (event_seq);

CREATE TABLE lane_entries (
    connector   TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    seq         BIGINT  NOT NULL,
    delivery_id BIGINT  NOT NULL,
    PRIMARY KEY (connector, key, seq)
);
