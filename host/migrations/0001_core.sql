-- One schema for both backends: only types that SQLite and PostgreSQL read
-- the same way. Times are milliseconds since the Unix epoch.

CREATE TABLE agents (
    name        TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL UNIQUE,
    admin       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE schemas (
    schema_id       TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    owner           TEXT NOT NULL,
    description     TEXT NOT NULL,
    visibility      TEXT NOT NULL,
    target_type     TEXT NOT NULL,
    latest_version  BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (owner, name)
);

CREATE TABLE schema_versions (
    schema_id   TEXT NOT NULL REFERENCES schemas (schema_id) ON DELETE CASCADE,
    version     BIGINT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (schema_id, version)
);

CREATE TABLE stashes (
    owner           TEXT NOT NULL,
    name            TEXT NOT NULL,
    persistent      BOOLEAN NOT NULL,
    -- Equal to name while the stash is shared or discoverable: the unique
    -- index below makes such a name hold across all agents.
    public_name     TEXT,
    body            BYTEA NOT NULL,
    content_type    TEXT NOT NULL,
    size            BIGINT NOT NULL,
    version         BIGINT NOT NULL,
    ttl             BIGINT,
    expires_at      BIGINT,
    renewed_at      BIGINT NOT NULL,
    schema_id       TEXT,
    schema_version  BIGINT,
    schema_name     TEXT,
    shared          BOOLEAN NOT NULL,
    discoverable    BOOLEAN NOT NULL,
    description     TEXT NOT NULL,
    labels          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (owner, persistent, name)
);
CREATE UNIQUE INDEX stashes_public_name ON stashes (persistent, public_name);
CREATE INDEX stashes_by_name ON stashes (persistent, name);
CREATE INDEX stashes_expiry ON stashes (expires_at);

CREATE TABLE streams (
    stream_id           TEXT PRIMARY KEY,
    owner               TEXT NOT NULL,
    name                TEXT NOT NULL,
    description         TEXT NOT NULL,
    labels              TEXT NOT NULL,
    discoverable        BOOLEAN NOT NULL,
    linked_stash        TEXT,
    ttl                 BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    retention_seconds   BIGINT,
    schema_id           TEXT,
    schema_version      BIGINT,
    schema_name         TEXT,
    last_seq            BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    UNIQUE (owner, name)
);
CREATE INDEX streams_by_name ON streams (name);
CREATE INDEX streams_by_link ON streams (linked_stash);
CREATE INDEX streams_expiry ON streams (expires_at);

CREATE TABLE stream_entries (
    stream_id   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    label       TEXT,
    data        TEXT NOT NULL,
    agent       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (stream_id, seq)
);
CREATE INDEX stream_entries_by_label ON stream_entries (stream_id, label, seq);
CREATE INDEX stream_entries_by_time ON stream_entries (created_at);
