-- What each call was about: a summary and the agent's structured fields, made by the agent's
-- language model when the call ends. Deleted with the call (retention, erasure).

CREATE TABLE call_summaries (
    call_id TEXT   PRIMARY KEY,
    org     TEXT,
    sub     TEXT   NOT NULL,
    agent   TEXT   NOT NULL,
    text    TEXT   NOT NULL,
    fields  JSONB  NOT NULL,
    method  TEXT   NOT NULL,
    engine  TEXT   NOT NULL,
    at_ms   BIGINT NOT NULL
);

CREATE INDEX call_summaries_by_subject ON call_summaries (sub, at_ms);

ALTER TABLE audit_log ADD COLUMN summaries BIGINT NOT NULL DEFAULT 0;
