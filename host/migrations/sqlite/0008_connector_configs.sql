-- Connector configs created or changed through the operator API. They
-- override the config file's connector of the same name, survive restarts and
-- reach every node sharing the database.
CREATE TABLE connector_configs (
    connector  TEXT    PRIMARY KEY,
    config     TEXT    NOT NULL,   -- the connector's settings as JSON
    updated_at INTEGER NOT NULL
);
