-- The attempt log by connector: a connector's page lists its latest
-- attempts through this index, however busy the other connectors are.
ALTER TABLE attempts ADD COLUMN connector TEXT NOT NULL DEFAULT '';
UPDATE attempts a SET connector = d.connector FROM deliveries d WHERE d.id = a.delivery_id;
CREATE INDEX attempts_connector ON attempts (connector, finished_at);
