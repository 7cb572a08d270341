-- wrk script: single-event POST /v1/track, a unique messageId per request.
-- Run: BENCH_WRITE_KEY=... wrk -t1 -c32 -d10s -s bench/track.lua http://127.0.0.1:PORT
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

function request()
   return wrk.format("POST", "/v1/track", common.headers, common.event(false))
end

function done(summary, latency, requests)
   common.report(summary, latency, 1, common.event(false))
end
