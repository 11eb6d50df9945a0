-- A team's version grows by one with every committed write to it. The host
-- keeps a team's snapshot in memory between writes and trusts it only while
-- the version it read is still the row's (other hosts on one PostgreSQL
-- write too).
ALTER TABLE teams ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
