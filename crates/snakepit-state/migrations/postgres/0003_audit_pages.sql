-- A run's connector calls are read in pages keyed by the audit id (`runs show ID
-- --calls --after N`) and summed up per run: an index in that order. (SQLite's index on
-- run_id already ends with the rowid, which is the id.)
CREATE INDEX audit_by_run_id ON audit (run_id, id);
DROP INDEX audit_by_run;
