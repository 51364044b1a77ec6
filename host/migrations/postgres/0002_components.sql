-- The component registry, shared by every node on the database.
CREATE TABLE components (
    connector   TEXT    NOT NULL,
    version     BIGINT  NOT NULL,         -- 1, 2, 3 … per connector
    digest      TEXT    NOT NULL,         -- sha256:<hex> of the bytes
    wasm        BYTEA   NOT NULL,
    info        TEXT    NOT NULL,         -- describe() as JSON
    uploaded_at BIGINT  NOT NULL,
    PRIMARY KEY (connector, version)
);

CREATE TABLE active_components (
    connector    TEXT    PRIMARY KEY,
    version      BIGINT  NOT NULL,
    activated_at BIGINT  NOT NULL
);
