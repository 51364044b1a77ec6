-- Finished events past the payload retention (storage.payload_retention_days)
-- keep only what deduplication needs until the dedup window
-- (storage.retention_days) ends: a 12-byte prefix of the SHA-256 of the id
-- and an 8-byte prefix of the event's digest, with the event's seq. The
-- payload, deliveries and attempt log are deleted (see store/retention.rs).
CREATE TABLE finished_ids (
    id_hash bytea  PRIMARY KEY,
    seq     bigint NOT NULL,
    digest  bytea  NOT NULL
);
-- Ids are forgotten oldest first (see store/retention.rs). A block range
-- index would do while rows arrive in seq order, but a delete-heavy table
-- refills freed space with new seqs and late compactions bring old ones.
CREATE INDEX finished_ids_seq ON finished_ids (seq);
-- The first seq kept per minute of acceptance: seq order is accept order,
-- so the ids accepted before a minute are those below its first seq.
CREATE TABLE finished_marks (
    minute    bigint PRIMARY KEY,
    first_seq bigint NOT NULL
);
