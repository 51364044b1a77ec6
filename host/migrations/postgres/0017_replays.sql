-- Replays (SPEC §4.2): stored events delivered again to one connector. A
-- replay copies each event it selects into a new event (`replay_id`, and
-- `origin_seq`: the event it copies) that joins the connector's lanes
-- behind what is queued, as any accepted event does.
CREATE TABLE replays (
    id          BIGSERIAL PRIMARY KEY,
    connector   TEXT    NOT NULL,
    since_ms    BIGINT  NOT NULL,
    until_ms    BIGINT  NOT NULL,
    types       TEXT    NOT NULL,              -- JSON array of patterns; [] = the connector's routes
    event_key   TEXT,
    rate        DOUBLE PRECISION NOT NULL,     -- events per second
    state       TEXT    NOT NULL CHECK (state IN ('running', 'done', 'cancelled')),
    last_seq    BIGINT  NOT NULL,              -- the newest event when it was created
    start_seq   BIGINT  NOT NULL,              -- where it began: its progress runs from here to last_seq
    cursor_seq  BIGINT  NOT NULL,              -- every event up to here examined
    due_at      BIGINT  NOT NULL,              -- when its next page may be made, by any node
    examined    BIGINT  NOT NULL DEFAULT 0,
    replayed    BIGINT  NOT NULL DEFAULT 0,
    created_by  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    finished_at BIGINT
);
ALTER TABLE events ADD COLUMN replay_id BIGINT;
ALTER TABLE events ADD COLUMN origin_seq BIGINT;
CREATE INDEX events_replay ON events (replay_id) WHERE replay_id IS NOT NULL;
-- A replay's copies look up the newest state of their key already
-- delivered or on its way, whatever the state now (see 0015).
CREATE INDEX deliveries_coalesce_all ON deliveries (connector, coalesce_key)
    WHERE coalesce_key IS NOT NULL;
