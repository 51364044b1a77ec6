-- The component registry: every uploaded version of every connector's
-- component, and which one is active. Lives in the store so it survives
-- restarts and is shared by every node on the same database.

CREATE TABLE components (
    connector   TEXT    NOT NULL,
    version     INTEGER NOT NULL,         -- 1, 2, 3 … per connector
    digest      TEXT    NOT NULL,         -- sha256:<hex> of the bytes
    wasm        BLOB    NOT NULL,
    info        TEXT    NOT NULL,         -- describe() as JSON
    uploaded_at INTEGER NOT NULL,
    PRIMARY KEY (connector, version)
);

CREATE TABLE active_components (
    connector    TEXT    PRIMARY KEY,
    version      INTEGER NOT NULL,
    activated_at INTEGER NOT NULL
);
