-- Every operator action: who (token name), what, when, before and after.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,   -- component.deploy, component.rollback, delivery.retry, delivery.skip
    target  TEXT    NOT NULL,   -- connector name or delivery id
    before  TEXT,               -- JSON
    after   TEXT                -- JSON
);
CREATE INDEX audit_log_at ON audit_log (at);
