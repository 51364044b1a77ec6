-- Per-route `expire_after`: a delivery not started by `expires_at` ends as
-- `expired` (final, keys released).
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check CHECK (state IN
    ('blocked', 'ready', 'in_flight', 'delivered', 'dead', 'superseded', 'skipped', 'expired'));
-- NULL: never expires (routes without `expire_after`)
ALTER TABLE deliveries ADD COLUMN expires_at BIGINT;
-- The expiry sweep: only not-yet-started deliveries that can expire.
CREATE INDEX deliveries_expiry ON deliveries (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('blocked', 'ready');
