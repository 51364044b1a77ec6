-- Operator controls per connector, shared by every node on the database.
CREATE TABLE connector_controls (
    connector  TEXT    PRIMARY KEY,
    paused     BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT  NOT NULL
);
