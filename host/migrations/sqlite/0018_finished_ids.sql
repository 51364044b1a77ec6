-- Finished events past the payload retention (storage.payload_retention_days)
-- keep only what deduplication needs until the dedup window
-- (storage.retention_days) ends: a 12-byte prefix of the SHA-256 of the id
-- and an 8-byte prefix of the event's digest, keyed by the event's seq. The
-- payload, deliveries and attempt log are deleted (see store/retention.rs).
CREATE TABLE finished_ids (
    seq     INTEGER PRIMARY KEY,
    id_hash BLOB    NOT NULL,
    digest  BLOB    NOT NULL
);
CREATE UNIQUE INDEX finished_ids_hash ON finished_ids (id_hash);
-- The first seq kept per minute of acceptance: seq order is accept order,
-- so the ids accepted before a minute are those below its first seq.
CREATE TABLE finished_marks (
    minute    INTEGER PRIMARY KEY,
    first_seq INTEGER NOT NULL
);
