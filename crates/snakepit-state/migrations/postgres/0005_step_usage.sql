-- What each step's calls cost (issue 15): summed over its attempts that a worker
-- answered; the peak is the largest. NULL for a step that no worker answered yet.
ALTER TABLE steps
    ADD COLUMN wall_us BIGINT,
    ADD COLUMN cpu_user_us BIGINT,
    ADD COLUMN cpu_sys_us BIGINT,
    ADD COLUMN peak_rss_bytes BIGINT,
    ADD COLUMN host_requests BIGINT,
    ADD COLUMN host_us BIGINT;
