-- The queue's tables churn: every claim and outcome updates a row of
-- deliveries and of connector_counts, every release deletes lane entries,
-- every purge deletes events, attempts and ids. PostgreSQL's defaults vacuum
-- a table once a fifth of its rows are dead, and throttle the vacuum: with a
-- million events passing through, the tables grew to about three times what
-- they held (BENCHMARKS.md, "Churn"). Here a table is vacuumed once 2% of its
-- rows (and at least 5,000) are dead, without the throttle: the space of dead
-- rows is reused before the files grow. Autovacuum itself must be on (the
-- server's default); the gateway warns at start when it is not.
ALTER TABLE deliveries SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.05
);
ALTER TABLE lane_entries SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.05
);
ALTER TABLE events SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.05
);
ALTER TABLE attempts SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.05
);
ALTER TABLE finished_ids SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.05
);
-- A row per connector and writer, updated by every commit group: vacuumed
-- whenever a thousand versions of them are dead.
ALTER TABLE connector_counts SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
