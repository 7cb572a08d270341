-- wrk script: POST /v1/batch of BENCH_BATCH_SIZE (default 100) copies of the event in the file
-- BENCH_EVENT_TEMPLATE (one JSON object whose messageId is the string "__MID__"), each copy with
-- a unique messageId. Used by the --http modes of bench/privacy.py and bench/filter_chain.py.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")
local size = tonumber(os.getenv("BENCH_BATCH_SIZE") or "100")
local file = assert(io.open(assert(os.getenv("BENCH_EVENT_TEMPLATE"), "BENCH_EVENT_TEMPLATE"), "r"))
local template = file:read("*a")
file:close()
local counter = 0

local function body()
   local items = {}
   for i = 1, size do
      counter = counter + 1
      local id = string.format("%s-%d-%d-%08x", common.run_id, common.tid, counter, math.random(0, 0x7fffffff))
      items[i] = template:gsub("__MID__", id, 1)
   end
   return '{"batch":[' .. table.concat(items, ",") .. '],"sentAt":"2024-05-01T12:00:00.050Z"}'
end

function request()
   return wrk.format("POST", "/v1/batch", common.headers, body())
end

function done(summary, latency, requests)
   common.report(summary, latency, size, body(), #template)
end
