-- Sandboxed agents: what an agent binding says (run_as, subscriptions,
-- delivery), and where each agent is on each stream it follows. A cursor
-- advances in the same transaction as the writes its entry made, so an
-- entry's effects land exactly once; a dead letter is an entry that failed
-- every attempt.
ALTER TABLE policies ADD COLUMN agent TEXT NOT NULL DEFAULT '{}';
-- How many agent calls led to an entry: 0 from HTTP, one more than the
-- entry it answered for an agent's. Entries past a limit are not delivered,
-- so agents answering each other cannot loop for ever.
ALTER TABLE stream_entries ADD COLUMN hops BIGINT NOT NULL DEFAULT 0;
CREATE TABLE agent_cursors (
    policy      TEXT NOT NULL,
    stream_id   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    processed   BIGINT NOT NULL,
    failed      BIGINT NOT NULL,
    skipped     BIGINT NOT NULL,
    looped      BIGINT NOT NULL DEFAULT 0,
    paused      BOOLEAN NOT NULL,
    last_error  TEXT,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (policy, stream_id)
);
CREATE TABLE agent_dead_letters (
    id          TEXT PRIMARY KEY,
    policy      TEXT NOT NULL,
    stream_id   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    attempts    BIGINT NOT NULL,
    error       TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX agent_dead_letters_by_policy ON agent_dead_letters (policy, at, id);
-- Which host runs each agent now: one at a time, taken over when the
-- holder stops renewing.
CREATE TABLE agent_leases (
    policy      TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    until       BIGINT NOT NULL
);
