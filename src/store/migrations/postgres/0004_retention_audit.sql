-- Erasure and retention: an audit log of erasures (who asked, when, how much went; never whose
-- data it was), and the index retention finds old calls by.

CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    at_ms      BIGINT NOT NULL,
    actor      TEXT   NOT NULL,
    org        TEXT,
    action     TEXT   NOT NULL,
    calls      BIGINT NOT NULL,
    items      BIGINT NOT NULL,
    metrics    BIGINT NOT NULL,
    events     BIGINT NOT NULL,
    recordings BIGINT NOT NULL,
    webhooks BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX calls_by_start ON calls (started_at_ms);
