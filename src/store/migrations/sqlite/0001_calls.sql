-- Calls, their conversation items, per-turn metrics and event log.
-- JSON is kept as TEXT (SQLite's JSON functions read it as it is).
-- No foreign keys: a row whose call was never stored (its start was dropped from a full queue)
-- is kept rather than failing the batch it came in.

CREATE TABLE calls (
    id              TEXT    PRIMARY KEY NOT NULL,
    org             TEXT,
    sub             TEXT    NOT NULL,
    agent           TEXT    NOT NULL,
    variables       TEXT    NOT NULL DEFAULT '{}',
    system_prompt   TEXT,
    started_at_ms   INTEGER NOT NULL,
    ended_at_ms     INTEGER,
    end_reason      TEXT,
    turns           INTEGER NOT NULL DEFAULT 0,
    caller_audio_ms INTEGER NOT NULL DEFAULT 0,
    agent_audio_ms  INTEGER NOT NULL DEFAULT 0
);

-- An owner's calls, newest first.
CREATE INDEX calls_by_owner ON calls (sub, org, started_at_ms DESC);

CREATE TABLE call_items (
    call_id       TEXT    NOT NULL,
    item_id       INTEGER NOT NULL,
    turn_id       INTEGER,
    role          TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    heard         TEXT,
    source        TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (call_id, item_id)
);

CREATE TABLE call_turn_metrics (
    call_id TEXT    NOT NULL,
    turn_id INTEGER NOT NULL,
    metrics TEXT    NOT NULL,
    at_ms   INTEGER NOT NULL,
    PRIMARY KEY (call_id, turn_id)
);

-- The primary key is the (call_id, seq) index events are read by.
CREATE TABLE call_events (
    call_id TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    at_ms   INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    data    TEXT    NOT NULL,
    PRIMARY KEY (call_id, seq)
);
