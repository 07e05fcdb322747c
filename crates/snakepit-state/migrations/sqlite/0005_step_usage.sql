-- What each step's calls cost (issue 15): summed over its attempts that a worker
-- answered; the peak is the largest. NULL for a step that no worker answered yet.
ALTER TABLE steps ADD COLUMN wall_us INTEGER;
ALTER TABLE steps ADD COLUMN cpu_user_us INTEGER;
ALTER TABLE steps ADD COLUMN cpu_sys_us INTEGER;
ALTER TABLE steps ADD COLUMN peak_rss_bytes INTEGER;
ALTER TABLE steps ADD COLUMN host_requests INTEGER;
ALTER TABLE steps ADD COLUMN host_us INTEGER;
