-- Coalescing (SPEC §3): a delivery whose route declares its event
-- full-state carries its coalesce tag (group and key value); a newer event
-- with the same tag supersedes the older ones that have not started.
ALTER TABLE deliveries ADD COLUMN coalesce_key TEXT;
CREATE INDEX deliveries_coalesce ON deliveries (connector, coalesce_key)
    WHERE coalesce_key IS NOT NULL AND state IN ('blocked', 'ready');
