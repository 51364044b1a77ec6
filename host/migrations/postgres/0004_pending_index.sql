-- Unfinished deliveries per connector, oldest first (queue depth, oldest age).
CREATE INDEX deliveries_pending ON deliveries (connector, id)
    WHERE state IN ('blocked', 'ready', 'in_flight');
