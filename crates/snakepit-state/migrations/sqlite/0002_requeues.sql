-- Several nodes (SPEC §8): how many times a scheduled run was re-queued after its node
-- stopped renewing its lease. A queued scheduled run has no owner ('') until claimed.
ALTER TABLE runs ADD COLUMN requeues INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_claimable ON runs (status, queued_at);
-- One scheduled run per job running at a time, whichever node claims it. Runs that an
-- older version left running side by side keep the newest; the others are interrupted.
UPDATE runs SET status = 'interrupted', finished_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now'),
    error = 'interrupted: another scheduled run of its job was running (found at an upgrade)'
WHERE trigger_type = 'schedule' AND status = 'running' AND id NOT IN
    (SELECT max(id) FROM runs WHERE trigger_type = 'schedule' AND status = 'running' GROUP BY job);
UPDATE steps SET status = 'interrupted' WHERE status IN ('running', 'retrying') AND run_id IN
    (SELECT id FROM runs WHERE error = 'interrupted: another scheduled run of its job was running (found at an upgrade)');
CREATE UNIQUE INDEX runs_one_running_per_job ON runs (job)
    WHERE trigger_type = 'schedule' AND status = 'running';
