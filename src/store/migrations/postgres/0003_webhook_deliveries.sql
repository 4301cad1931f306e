-- Signed webhooks: each event of a call a webhook is owed is a delivery, stored before its first
-- attempt so that a restart does not lose it. `body` is the exact JSON that is signed and sent,
-- kept as TEXT (not JSONB, which would reorder it) so the bytes never change between attempts.
-- A worker claims a due delivery by setting `claim` and `claimed_until_ms` in one conditional
-- UPDATE; a delivered one (`state = 'delivered'`) is never claimed again.

CREATE TABLE webhook_deliveries (
    id               TEXT   PRIMARY KEY,
    org              TEXT,
    sub              TEXT   NOT NULL,
    agent            TEXT   NOT NULL,
    call_id          TEXT   NOT NULL,
    event            TEXT   NOT NULL,
    url              TEXT   NOT NULL,
    body             TEXT   NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    -- 'pending', 'delivered' or 'failed'.
    state            TEXT   NOT NULL DEFAULT 'pending',
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms  BIGINT,
    claim            TEXT,
    claimed_until_ms BIGINT,
    last_status      BIGINT,
    last_error       TEXT,
    delivered_at_ms  BIGINT
);

-- What the worker looks for: pending deliveries by when they are due.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ms)
    WHERE state = 'pending';

-- An org's deliveries, newest first.
CREATE INDEX webhook_deliveries_by_org ON webhook_deliveries (org, created_at_ms DESC, id DESC);
