-- Replays (SPEC §4.2): stored events delivered again to one connector. A
-- replay copies each event it selects into a new event (`replay_id`, and
-- `origin_seq`: the event it copies) that joins the connector's lanes
-- behind what is queued, as any accepted event does.
CREATE TABLE replays (
    id          INTEGER PRIMARY KEY,
    connector   TEXT    NOT NULL,
    since_ms    INTEGER NOT NULL,
    until_ms    INTEGER NOT NULL,
    types       TEXT    NOT NULL,              -- JSON array of patterns; [] = the connector's routes
    event_key   TEXT,
    rate        REAL    NOT NULL,              -- events per second
    state       TEXT    NOT NULL CHECK (state IN ('running', 'done', 'cancelled')),
    last_seq    INTEGER NOT NULL,              -- the newest event when it was created
    start_seq   INTEGER NOT NULL,              -- where it began: its progress runs from here to last_seq
    cursor_seq  INTEGER NOT NULL,              -- every event up to here examined
    due_at      INTEGER NOT NULL,              -- when its next page may be made, by any node
    examined    INTEGER NOT NULL DEFAULT 0,
    replayed    INTEGER NOT NULL DEFAULT 0,
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    finished_at INTEGER
);
ALTER TABLE events ADD COLUMN replay_id INTEGER;
ALTER TABLE events ADD COLUMN origin_seq INTEGER;
CREATE INDEX events_replay ON events (replay_id) WHERE replay_id IS NOT NULL;
-- A replay's copies look up the newest state of their key already
-- delivered or on its way, whatever the state now (see 0015).
CREATE INDEX deliveries_coalesce_all ON deliveries (connector, coalesce_key)
    WHERE coalesce_key IS NOT NULL;
