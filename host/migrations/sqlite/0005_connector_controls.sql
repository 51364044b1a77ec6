-- Operator controls per connector, shared by every node on the database.
-- A paused connector accepts and queues events but is never claimed from.
CREATE TABLE connector_controls (
    connector  TEXT    PRIMARY KEY,
    paused     INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    updated_at INTEGER NOT NULL
);
