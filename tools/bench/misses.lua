-- wrk script of scenario 12c (tools/bench/scenario_cache.py): every request to
-- the URL's path with a query string of its own, ?n=N, so a cached route
-- misses each time (and stores each answer) and an uncached route does the same
-- work without the cache. N starts from the clock so that the runs of one
-- bench (and its warm-ups) never repeat a key another run has stored.
-- The reporter (done) is report.lua's, loaded from this script's folder.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local base = wrk.path
local n = (os.time() % 100000) * 10000000

function request()
  n = n + 1
  return wrk.format(nil, base .. "?n=" .. string.format("%d", n))
end
