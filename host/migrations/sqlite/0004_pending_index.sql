-- Unfinished deliveries per connector, oldest first: queue depth and the age
-- of the oldest pending delivery for /metrics and `switchboard status`
-- without scanning delivered history.
CREATE INDEX deliveries_pending ON deliveries (connector, id)
    WHERE state IN ('blocked', 'ready', 'in_flight');
