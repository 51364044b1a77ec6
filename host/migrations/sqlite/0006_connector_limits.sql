-- Operator overrides of a connector's concurrency and rate, changeable at run
-- time and shared by every node; NULL means "as configured".
ALTER TABLE connector_controls ADD COLUMN concurrency INTEGER CHECK (concurrency IS NULL OR concurrency >= 1);
ALTER TABLE connector_controls ADD COLUMN rate REAL CHECK (rate IS NULL OR rate > 0);
