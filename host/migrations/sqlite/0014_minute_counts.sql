-- Deliveries and failed attempts per connector and minute, for the
-- console's plots. Each node adds what it saw to its own row (`node`), so
-- nodes never wait for each other; a minute's figure is the sum over nodes.
-- Kept for `console.history_days`.
CREATE TABLE minute_counts (
    connector TEXT    NOT NULL,
    minute    INTEGER NOT NULL,                -- epoch milliseconds / 60000
    node      TEXT    NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (connector, minute, node)
) WITHOUT ROWID;
CREATE INDEX minute_counts_minute ON minute_counts (minute);
