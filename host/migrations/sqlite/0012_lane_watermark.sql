-- The SQLite writer keeps the lane entries of its most recent deliveries in
-- memory and writes them to `lane_entries` in one sorted pass now and then
-- (random keys otherwise dirty a random page of `lane_entries` per key per
-- event). Every lane entry of a delivery below `delivery_id` that still
-- holds its lanes is in `lane_entries`; those of later deliveries are
-- rebuilt at start from `deliveries` and `events.keys`.
CREATE TABLE lane_watermark (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    delivery_id INTEGER NOT NULL
);
INSERT INTO lane_watermark (id, delivery_id) SELECT 1, COALESCE(MAX(id), 0) + 1 FROM deliveries;
