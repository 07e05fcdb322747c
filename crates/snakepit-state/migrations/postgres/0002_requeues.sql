-- Several nodes (SPEC §8): how many times a scheduled run was re-queued after its node
-- stopped renewing its lease. A queued scheduled run has no owner ('') until claimed.
ALTER TABLE runs ADD COLUMN requeues BIGINT NOT NULL DEFAULT 0;
CREATE INDEX runs_claimable ON runs (status, queued_at);
