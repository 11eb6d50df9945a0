-- Policies and their decision log. The component's bytes are kept so every
-- host can load it (and so a restart needs nothing else).

CREATE TABLE policies (
    name        TEXT PRIMARY KEY,
    hook        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    wasm        BYTEA NOT NULL,
    imports     TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    scope       TEXT NOT NULL,
    config      TEXT NOT NULL,
    grants      TEXT NOT NULL,
    limits      TEXT NOT NULL,
    ord         BIGINT NOT NULL,
    isolation   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE policy_decisions (
    decision_id TEXT PRIMARY KEY,
    policy      TEXT NOT NULL,
    version     BIGINT NOT NULL,
    hook        TEXT NOT NULL,
    dry_run     BOOLEAN NOT NULL,
    agent       TEXT NOT NULL,
    input       TEXT NOT NULL,
    result      TEXT,
    error       TEXT,
    duration_us BIGINT NOT NULL,
    fuel_used   BIGINT,
    logs        TEXT NOT NULL,
    stdout      TEXT NOT NULL,
    stderr      TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX policy_decisions_by_policy ON policy_decisions (policy, at, decision_id);
