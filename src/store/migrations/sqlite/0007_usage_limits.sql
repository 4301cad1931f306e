-- Usage limits and metering. An org's own limits (NULL: unlimited); an org without a row has
-- the configured defaults (VOXWIRE_LIMIT_*). The default org is stored as ''.

CREATE TABLE org_limits (
    org                      TEXT    PRIMARY KEY,
    concurrent_calls         INTEGER,
    daily_minutes            INTEGER,
    subject_concurrent_calls INTEGER,
    subject_daily_minutes    INTEGER,
    updated_at_ms            INTEGER NOT NULL
);

-- What each live stretch of a call used, per UTC day ('YYYY-MM-DD'), metric and engine: the
-- stretch's running total, raised as the call goes on and added up when read. Kept when the
-- call is erased or expires, as the org's usage record.
CREATE TABLE call_usage (
    call_id TEXT   NOT NULL,
    part_ms INTEGER NOT NULL,
    day     TEXT   NOT NULL,
    org     TEXT   NOT NULL,
    sub     TEXT   NOT NULL,
    agent   TEXT   NOT NULL,
    metric  TEXT   NOT NULL,
    engine  TEXT   NOT NULL,
    value   INTEGER NOT NULL,
    PRIMARY KEY (call_id, part_ms, day, metric, engine)
);

CREATE INDEX call_usage_by_org_day ON call_usage (org, day, metric);
