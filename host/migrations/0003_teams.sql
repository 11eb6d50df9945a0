-- Teams, their tasks, messages and algedonic signals (the agent-teams
-- protocol). Counters live on the team row, so every write to a team takes
-- that row first: ids come out 1, 2, 3... and a team's writes are ordered.

CREATE TABLE teams (
    name            TEXT PRIMARY KEY,
    lead            TEXT NOT NULL,
    stream_id       TEXT NOT NULL,
    rules           TEXT NOT NULL,
    next_task_id    BIGINT NOT NULL,
    next_message_id BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE team_members (
    team        TEXT NOT NULL,
    agent       TEXT NOT NULL,
    added_by    TEXT NOT NULL,
    added_at    BIGINT NOT NULL,
    PRIMARY KEY (team, agent)
);
CREATE INDEX team_members_by_agent ON team_members (agent);

CREATE TABLE tasks (
    team        TEXT NOT NULL,
    id          BIGINT NOT NULL,
    subject     TEXT NOT NULL,
    description TEXT NOT NULL,
    active_form TEXT NOT NULL,
    status      TEXT NOT NULL,
    owner       TEXT,
    metadata    TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (team, id)
);

-- `task` waits for `blocked_by`; a task's `blocks` is the reverse lookup,
-- so the two directions cannot disagree.
CREATE TABLE task_deps (
    team        TEXT NOT NULL,
    task        BIGINT NOT NULL,
    blocked_by  BIGINT NOT NULL,
    PRIMARY KEY (team, task, blocked_by)
);
CREATE INDEX task_deps_by_blocker ON task_deps (team, blocked_by);

-- One row per recipient; a broadcast shares one id.
CREATE TABLE team_messages (
    team        TEXT NOT NULL,
    id          BIGINT NOT NULL,
    recipient   TEXT NOT NULL,
    sender      TEXT NOT NULL,
    addressed   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    summary     TEXT NOT NULL,
    message     TEXT NOT NULL,
    request_id  TEXT,
    approve     BOOLEAN,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (team, recipient, id)
);
CREATE INDEX team_messages_by_request ON team_messages (team, request_id);

CREATE TABLE signals (
    signal_id       TEXT PRIMARY KEY,
    scope_kind      TEXT NOT NULL,
    scope           TEXT NOT NULL,
    level           TEXT NOT NULL,
    category        TEXT NOT NULL,
    reporter        TEXT NOT NULL,
    task_id         BIGINT,
    body            TEXT NOT NULL,
    signal_task_id  BIGINT,
    actions         TEXT NOT NULL,
    halts           BOOLEAN NOT NULL,
    acknowledged_by TEXT,
    acknowledged_at BIGINT,
    note            TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX signals_by_scope ON signals (scope_kind, scope, created_at);

-- Which team or contract a decision was made for (`team:NAME`,
-- `contract:NAME`); dry runs have none.
ALTER TABLE policy_decisions ADD COLUMN scope TEXT;
CREATE INDEX policy_decisions_by_scope ON policy_decisions (scope, at, decision_id);
