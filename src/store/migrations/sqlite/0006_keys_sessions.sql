-- The control plane: organisations, their API keys (only a SHA-256 of each key's secret is
-- kept), and the short-lived call sessions minted with a key (`POST /api/sessions`), each bound
-- to the one call its token started.

CREATE TABLE orgs (
    name          TEXT    PRIMARY KEY,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id              TEXT    PRIMARY KEY,
    org             TEXT    NOT NULL REFERENCES orgs (name),
    name            TEXT    NOT NULL,
    secret_sha256   TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    last_used_at_ms INTEGER,
    revoked_at_ms   INTEGER
);

CREATE INDEX api_keys_by_org ON api_keys (org, created_at_ms);

CREATE TABLE call_sessions (
    id            TEXT    PRIMARY KEY,
    org           TEXT,
    key_id        TEXT,
    agent         TEXT    NOT NULL,
    sub           TEXT    NOT NULL,
    variables     TEXT    NOT NULL,
    metadata      TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    call_id       TEXT
);

CREATE INDEX call_sessions_by_expiry ON call_sessions (expires_at_ms);
