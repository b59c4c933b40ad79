-- wrk script of scenario 8 (tools/bench): every request carries X-User: user-N,
-- N cycling through 1..USERS (1,000), so consistent_hash key=header:X-User hashes
-- a different key each time and spreads over the three servers as round_robin
-- does. Both builds get the same requests. The requests are formatted once, in
-- init(), so wrk does no per-request formatting, only a table look-up.
-- The reporter (done) is report.lua's, loaded from this script's folder.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local USERS = 1000
local reqs = {}
local i = 0

function init(args)
  for n = 1, USERS do
    local h = {}
    for k, v in pairs(wrk.headers) do h[k] = v end
    h["X-User"] = "user-" .. n
    reqs[n] = wrk.format(nil, nil, h)
  end
end

function request()
  i = i % USERS + 1
  return reqs[i]
end
