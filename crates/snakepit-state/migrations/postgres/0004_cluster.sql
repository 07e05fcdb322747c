-- Several machines (issue 17).
-- Fencing: a run's epoch moves on at each claim and re-queue; every write of an
-- execution carries its claim's epoch and is refused once the run's has moved on. Steps
-- and log lines keep the epoch that wrote them. A run owned from its insert (a manual
-- run of the process that made it) holds epoch 1.
ALTER TABLE runs ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE logs ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
UPDATE runs SET epoch = 1 WHERE owner <> '';

-- Each serve records itself and renews its row; one not seen for its lease is lost.
CREATE TABLE nodes (
    id         TEXT PRIMARY KEY NOT NULL,       -- its owner: host/boot id/pid/start time
    host       TEXT NOT NULL,
    pid        BIGINT NOT NULL,
    version    TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL,
    runs       BIGINT NOT NULL,                 -- runs in hand at last_seen
    lease_ms   BIGINT NOT NULL
);

-- Wake-ups: idle nodes LISTEN on snakepit_runs; a run queued (inserted or re-queued)
-- or ended notifies it, with the schema of the table as payload (several installs or
-- test schemas share a database and its channels).
CREATE FUNCTION snakepit_runs_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('snakepit_runs', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER runs_notify AFTER INSERT OR UPDATE OF status ON runs
    FOR EACH ROW WHEN (NEW.status <> 'running') EXECUTE FUNCTION snakepit_runs_notify();
