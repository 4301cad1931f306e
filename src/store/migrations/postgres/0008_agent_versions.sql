-- Agents made over the API: every version of each, per org ('' is the default org). A version
-- whose definition is NULL deleted the agent. Calls keep the version they started with.

CREATE TABLE agent_versions (
    org        TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    version    BIGINT  NOT NULL,
    definition TEXT,
    actor      TEXT    NOT NULL,
    at_ms      BIGINT  NOT NULL,
    PRIMARY KEY (org, name, version)
);
