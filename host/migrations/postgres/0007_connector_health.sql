-- Cluster-wide connector health and rate: one breaker and one token bucket per
-- connector for every node on the database, so a dead destination gets one
-- probe per interval from the whole cluster and a rate limit holds for the
-- cluster, not per node.
CREATE TABLE connector_health (
    connector         TEXT    PRIMARY KEY,
    open              BOOLEAN NOT NULL,
    next_probe_at     BIGINT  NOT NULL,
    probe_interval_ms BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL
);

CREATE TABLE connector_tokens (
    connector    TEXT             PRIMARY KEY,
    tokens       DOUBLE PRECISION NOT NULL,
    refreshed_at BIGINT           NOT NULL
);
