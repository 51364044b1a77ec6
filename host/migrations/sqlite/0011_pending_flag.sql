-- `deliveries_pending` named `state` in its WHERE clause, and SQLite rewrites
-- an entry of a partial index whenever an UPDATE assigns a column the index
-- or its WHERE clause names, even when the entry stays the same. So every
-- move between pending states (blocked → ready on promotion, ready →
-- in_flight on claim) deleted and re-inserted the delivery's entry: a random
-- page per promotion with a backlog behind shared keys. `pending` changes
-- only when a delivery becomes final or comes back from dead.
ALTER TABLE deliveries ADD COLUMN pending INTEGER NOT NULL DEFAULT 1 CHECK (pending IN (0, 1));
UPDATE deliveries SET pending = 0 WHERE state NOT IN ('blocked', 'ready', 'in_flight');
DROP INDEX deliveries_pending;
CREATE INDEX deliveries_pending ON deliveries (connector, id) WHERE pending = 1;
