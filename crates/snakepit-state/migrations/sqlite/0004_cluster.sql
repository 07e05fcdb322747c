-- Several machines (issue 17): fencing epochs and the nodes table (see the PostgreSQL
-- migration; SQLite serves one node and has no wake-ups).
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE logs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
UPDATE runs SET epoch = 1 WHERE owner <> '';

CREATE TABLE nodes (
    id         TEXT PRIMARY KEY NOT NULL,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    version    TEXT NOT NULL,
    started_at TEXT NOT NULL,
    last_seen  TEXT NOT NULL,
    runs       INTEGER NOT NULL,
    lease_ms   INTEGER NOT NULL
);
