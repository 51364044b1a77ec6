-- Per-route `expire_after`: a delivery not started by `expires_at` ends as
-- `expired` (final, keys released). SQLite cannot change a CHECK constraint
-- in place, so the table is rebuilt once with the new state and column.

CREATE TABLE deliveries_new (
    id              INTEGER PRIMARY KEY,
    event_seq       INTEGER NOT NULL,
    connector       TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN
                        ('blocked', 'ready', 'in_flight', 'delivered', 'dead', 'superseded',
                         'skipped', 'expired')),
    -- lanes in which this delivery is not yet the head; ready only at 0
    blockers        INTEGER NOT NULL DEFAULT 0 CHECK (blockers >= 0),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    lease_token     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    lease_owner     TEXT,
    -- NULL: never expires (routes without `expire_after`)
    expires_at      INTEGER
);

INSERT INTO deliveries_new (id, event_seq, connector, state, blockers, attempts, next_attempt_at,
                            lease_until, lease_token, last_error, created_at, updated_at, lease_owner)
SELECT id, event_seq, connector, state, blockers, attempts, next_attempt_at,
       lease_until, lease_token, last_error, created_at, updated_at, lease_owner
FROM deliveries;

DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;

CREATE INDEX deliveries_claim ON deliveries (connector, next_attempt_at, id) WHERE state = 'ready';
CREATE INDEX deliveries_lease ON deliveries (lease_until) WHERE state = 'in_flight';
CREATE INDEX deliveries_dead ON deliveries (connector, id) WHERE state = 'dead';
CREATE INDEX deliveries_event ON deliveries (event_seq);
CREATE INDEX deliveries_pending ON deliveries (connector, id)
    WHERE state IN ('blocked', 'ready', 'in_flight');
-- The expiry sweep: only not-yet-started deliveries that can expire.
CREATE INDEX deliveries_expiry ON deliveries (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('blocked', 'ready');
