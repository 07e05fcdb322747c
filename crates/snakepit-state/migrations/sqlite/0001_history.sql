-- Run history and audit log (SQLite). Times are RFC 3339 text in UTC.
CREATE TABLE runs (
    id                TEXT PRIMARY KEY NOT NULL,
    job               TEXT NOT NULL,
    trigger_type      TEXT NOT NULL,            -- schedule | manual
    session_user_name TEXT NOT NULL,
    status            TEXT NOT NULL,            -- queued running succeeded failed cancelled interrupted
    params            TEXT NOT NULL,            -- JSON object
    scheduled_for     TEXT NOT NULL,
    queued_at         TEXT NOT NULL,
    started_at        TEXT,
    finished_at       TEXT,
    error             TEXT,
    owner             TEXT NOT NULL,            -- host/boot id/pid/process start time
    lease_until       TEXT NOT NULL
);
CREATE INDEX runs_by_job ON runs (job, queued_at);
CREATE INDEX runs_by_status ON runs (status);
CREATE UNIQUE INDEX runs_one_per_tick ON runs (job, scheduled_for) WHERE trigger_type = 'schedule';

CREATE TABLE steps (
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,              -- pending running retrying succeeded failed skipped cancelled interrupted
    attempts        INTEGER NOT NULL DEFAULT 0,
    result          TEXT,                       -- JSON
    error_type      TEXT,
    error_message   TEXT,
    error_traceback TEXT,
    started_at      TEXT,
    finished_at     TEXT,
    PRIMARY KEY (run_id, position)
);

CREATE TABLE logs (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step    TEXT,
    attempt INTEGER,
    time    TEXT NOT NULL,
    level   INTEGER NOT NULL,                   -- Python's: 10 DEBUG .. 50 CRITICAL
    logger  TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX logs_by_run ON logs (run_id, id);

CREATE TABLE schedules (
    job       TEXT PRIMARY KEY NOT NULL,
    last_tick TEXT NOT NULL
);

CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    time        TEXT NOT NULL,
    package     TEXT NOT NULL,
    call_id     INTEGER NOT NULL,
    run_id      TEXT,
    connector   TEXT NOT NULL,
    target      TEXT NOT NULL,
    row_count   INTEGER,
    duration_us INTEGER NOT NULL,
    outcome     TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (time);
CREATE INDEX audit_by_run ON audit (run_id);
