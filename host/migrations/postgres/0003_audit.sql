-- Every operator action: who (token name), what, when, before and after.
CREATE TABLE audit_log (
    id      BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT  NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    before  TEXT,               -- JSON
    after   TEXT                -- JSON
);
CREATE INDEX audit_log_at ON audit_log (at);
