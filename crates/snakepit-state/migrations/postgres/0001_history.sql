-- Run history and audit log (PostgreSQL).
CREATE TABLE runs (
    id                TEXT PRIMARY KEY NOT NULL,
    job               TEXT NOT NULL,
    trigger_type      TEXT NOT NULL,            -- schedule | manual
    session_user_name TEXT NOT NULL,
    status            TEXT NOT NULL,            -- queued running succeeded failed cancelled interrupted
    params            TEXT NOT NULL,            -- JSON object
    scheduled_for     TIMESTAMPTZ NOT NULL,
    queued_at         TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    error             TEXT,
    owner             TEXT NOT NULL,            -- host/boot id/pid/process start time
    lease_until       TIMESTAMPTZ NOT NULL
);
CREATE INDEX runs_by_job ON runs (job, queued_at);
CREATE INDEX runs_by_status ON runs (status);
CREATE UNIQUE INDEX runs_one_per_tick ON runs (job, scheduled_for) WHERE trigger_type = 'schedule';

CREATE TABLE steps (
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position        BIGINT NOT NULL,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,              -- pending running retrying succeeded failed skipped cancelled interrupted
    attempts        BIGINT NOT NULL DEFAULT 0,
    result          TEXT,                       -- JSON
    error_type      TEXT,
    error_message   TEXT,
    error_traceback TEXT,
    started_at      TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ,
    PRIMARY KEY (run_id, position)
);

CREATE TABLE logs (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step    TEXT,
    attempt BIGINT,
    time    TIMESTAMPTZ NOT NULL,
    level   BIGINT NOT NULL,                   -- Python's: 10 DEBUG .. 50 CRITICAL
    logger  TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX logs_by_run ON logs (run_id, id);

CREATE TABLE schedules (
    job       TEXT PRIMARY KEY NOT NULL,
    last_tick TIMESTAMPTZ NOT NULL
);

CREATE TABLE audit (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time        TIMESTAMPTZ NOT NULL,
    package     TEXT NOT NULL,
    call_id     BIGINT NOT NULL,
    run_id      TEXT,
    connector   TEXT NOT NULL,
    target      TEXT NOT NULL,
    row_count   BIGINT,
    duration_us BIGINT NOT NULL,
    outcome     TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (time);
CREATE INDEX audit_by_run ON audit (run_id);
