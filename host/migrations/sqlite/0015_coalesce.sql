-- Coalescing (SPEC §3): a delivery whose route declares its event
-- full-state carries its coalesce tag (group and key value); a newer event
-- with the same tag supersedes the older ones that have not started. The
-- index holds pending deliveries only: `pending` changes when a delivery
-- becomes final, not on each move between pending states (see 0011).
ALTER TABLE deliveries ADD COLUMN coalesce_key TEXT;
CREATE INDEX deliveries_coalesce ON deliveries (connector, coalesce_key)
    WHERE coalesce_key IS NOT NULL AND pending = 1;
