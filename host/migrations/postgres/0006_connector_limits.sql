-- Operator overrides of a connector's concurrency and rate; NULL = as configured.
ALTER TABLE connector_controls ADD COLUMN concurrency BIGINT CHECK (concurrency IS NULL OR concurrency >= 1);
ALTER TABLE connector_controls ADD COLUMN rate DOUBLE PRECISION CHECK (rate IS NULL OR rate > 0);
