-- wrk script for bench/scrape.py. With WRK_PACE_MS set, each connection waits a random 0.5x to 1.5x of
-- it before every request (scrapers at independent phases, as Prometheus replicas are); without it,
-- requests follow each other back to back. Prints one JSON line: counts, latency percentiles in us.
local pace = tonumber(os.getenv("WRK_PACE_MS") or "")
if pace then
  math.randomseed(os.time())
  delay = function()
    return math.random(math.floor(pace / 2), math.floor(pace * 3 / 2))
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect + e.read + e.write + e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
