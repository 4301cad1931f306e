-- Erasure and retention: an audit log of erasures (who asked, when, how much went; never whose
-- data it was), and the index retention finds old calls by.

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms      INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    org        TEXT,
    action     TEXT    NOT NULL,
    calls      INTEGER NOT NULL,
    items      INTEGER NOT NULL,
    metrics    INTEGER NOT NULL,
    events     INTEGER NOT NULL,
    recordings INTEGER NOT NULL,
    webhooks INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX calls_by_start ON calls (started_at_ms);
