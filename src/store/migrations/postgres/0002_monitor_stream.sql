-- The monitor stream: each event the monitor shows gets an id that orders the events of every
-- call of a node, so a monitor that reconnects is sent what it missed (`Last-Event-ID`).
-- Operators list the calls of their org.

ALTER TABLE call_events ADD COLUMN stream_id BIGINT;

CREATE INDEX call_events_by_stream ON call_events (stream_id) WHERE stream_id IS NOT NULL;

CREATE INDEX calls_by_org ON calls (org, started_at_ms DESC);
