-- wrk script: POST /v1/batch of BENCH_BATCH_SIZE (default 100) track events, each with a
-- unique messageId.
-- Run: BENCH_WRITE_KEY=... wrk -t1 -c32 -d10s -s bench/batch.lua http://127.0.0.1:PORT
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")
local size = tonumber(os.getenv("BENCH_BATCH_SIZE") or "100")

local function body()
   local items = {}
   for i = 1, size do
      items[i] = common.event(true)
   end
   return '{"batch":[' .. table.concat(items, ",")
      .. '],"sentAt":"2024-05-01T12:00:00.050Z","context":{"library":{"name":"analytics-python","version":"2.4.0"}}}'
end

-- BENCH_DELAY_MS: a pause before each request on a connection (wrk calls delay()), to offer a
-- set share of the most the server takes (bench/log_growth.py --rate-share).
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if pause > 0 then
   function delay()
      return pause
   end
end

function request()
   return wrk.format("POST", "/v1/batch", common.headers, body())
end

function done(summary, latency, requests)
   common.report(summary, latency, size, body())
end
