-- Shared by track.lua, batch.lua and pixel.lua (loaded with dofile from this folder).
--
-- Environment (set by bench/ingest.py):
--   BENCH_WRITE_KEY   the source's write key, sent as HTTP Basic user
--   BENCH_RUN_ID      a per-run prefix, so messageIds never repeat across runs
--
-- Every event gets a unique messageId: run id + wrk thread id + per-thread counter + random,
-- so the gateway's dedup can never short-cut the write path.

local M = {}

local function b64(data)
   local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
   return ((data:gsub(".", function(x)
      local r, byte = "", x:byte()
      for i = 8, 1, -1 do r = r .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and "1" or "0") end
      return r
   end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
      if #x < 6 then return "" end
      local c = 0
      for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
      return chars:sub(c + 1, c + 1)
   end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

M.write_key = os.getenv("BENCH_WRITE_KEY") or "bench-write-key"
M.run_id = os.getenv("BENCH_RUN_ID") or tostring(os.time())
M.headers = {
   ["Content-Type"] = "application/json",
   ["Authorization"] = "Basic " .. b64(M.write_key .. ":"),
   ["User-Agent"] = "analytics-python/2.4.0",
}

-- A realistic track call (about 380 bytes): an e-commerce event with properties and context.
local EVENT = '{%s"messageId":"%s","userId":"user-%d","anonymousId":"anon-%08x",'
   .. '"event":"Order Completed","properties":{"orderId":"ord-%d","revenue":49.99,'
   .. '"currency":"USD","products":[{"sku":"SKU-1234","name":"Widget",'
   .. '"price":24.99,"quantity":2}]},"context":{"library":{"name":"analytics-python",'
   .. '"version":"2.4.0"},"locale":"en-US"},'
   .. '"timestamp":"2024-05-01T12:00:00.000Z"}'

local counter = 0
M.tid = 0

-- Called once per thread from init(); tid comes from setup() in the script.
function M.seed(tid)
   M.tid = tid or 0
   math.randomseed(os.time() * 1000 + M.tid * 7919 + math.floor((os.clock() * 1e6) % 1e6))
end

function M.event(with_type)
   counter = counter + 1
   local id = string.format("%s-%d-%d-%08x", M.run_id, M.tid, counter, math.random(0, 0x7fffffff))
   local user = math.random(1, 100000)
   return string.format(EVENT, with_type and '"type":"track",' or "", id, user,
                        math.random(0, 0x7fffffff), counter)
end

function M.count()
   return counter
end

-- Print one machine-readable line for bench/ingest.py and bench/pixel.py (runs in wrk's main
-- Lua state). event_bytes defaults to the size of a track event from M.event.
function M.report(summary, latency, events_per_request, sample_body, event_bytes)
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,'
         .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,'
         .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,'
         .. '"events_per_request":%d,"request_body_bytes":%d,"event_bytes":%d}\n',
      summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write,
      e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean, events_per_request, #sample_body, event_bytes or #M.event(false)))
end

return M
