-- A decision keeps at most 100 guest log lines; the record counts the rest,
-- so a reader knows the log it sees is cut.
ALTER TABLE policy_decisions ADD COLUMN logs_dropped BIGINT NOT NULL DEFAULT 0;
