-- Shared by track.lua, batch.lua and pixel.lua (loaded with dofile from this folder).
--
-- Environment (set by bench/ingest.py):
--   BENCH_WRITE_KEY   the source's write key, sent as HTTP Basic user
--   BENCH_RUN_ID      a per-run prefix, so messageIds never repeat across runs
--
-- Every event gets a unique messageId: run id + wrk thread id + per-thread counter + random,
-- so the gateway's dedup can never short-cut the write path.

local M = {}

local byte, char, unpack = string.byte, string.char, unpack or table.unpack

-- Standard base64, written for speed (wrk has one core and also drives nginx): character codes
-- into a reused table, one string.char at the end.
local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local CODE = {}
for i = 0, 63 do
   CODE[i] = byte(ALPHABET, i + 1)
end
local PAD = byte("=")
local out = {}

function M.b64(s)
   local n, len = 0, #s
   local full = len - len % 3
   for i = 1, full, 3 do
      local a, b, c = byte(s, i, i + 2)
      out[n + 1] = CODE[(a - a % 4) / 4]
      out[n + 2] = CODE[(a % 4) * 16 + (b - b % 16) / 16]
      out[n + 3] = CODE[(b % 16) * 4 + (c - c % 64) / 64]
      out[n + 4] = CODE[c % 64]
      n = n + 4
   end
   local rest = len - full
   if rest > 0 then
      local a, b = byte(s, full + 1), rest == 2 and byte(s, full + 2) or 0
      out[n + 1] = CODE[(a - a % 4) / 4]
      out[n + 2] = CODE[(a % 4) * 16 + (b - b % 16) / 16]
      out[n + 3] = rest == 2 and CODE[(b % 16) * 4] or PAD
      out[n + 4] = PAD
      n = n + 4
   end
   return char(unpack(out, 1, n))
end

M.write_key = os.getenv("BENCH_WRITE_KEY") or "bench-write-key"
M.run_id = os.getenv("BENCH_RUN_ID") or tostring(os.time())
M.headers = {
   ["Content-Type"] = "application/json",
   ["Authorization"] = "Basic " .. M.b64(M.write_key .. ":"),
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

-- Called once per thread from init() below; tid comes from setup().
function M.seed(tid)
   M.tid = tid or 0
   math.randomseed(os.time() * 1000 + M.tid * 7919 + math.floor((os.clock() * 1e6) % 1e6))
end

-- wrk's per-thread hooks, the same for every script here (wrk loads this file in each thread's
-- Lua state too): a thread id for the messageIds, and a generator seeded per thread.
local next_tid = 0
function setup(thread)
   next_tid = next_tid + 1
   thread:set("tid", next_tid)
end

function init(args)
   M.seed(tid)
end

-- BENCH_MESSAGE_IDS=uuid4: a random UUIDv4 and nothing else, as the Python and mobile clients
-- send (random keys land on random pages of the dedup keys, among those of a pre-filled log too);
-- otherwise the run id, thread id, counter and a random suffix (keys of one run share a prefix,
-- so they cluster, as the time-ordered ids of the Node and browser clients do).
local UUID_IDS = os.getenv("BENCH_MESSAGE_IDS") == "uuid4"
local random = math.random

local function uuid4()
   return string.format("%08x-%04x-4%03x-%04x-%04x%08x", random(0, 0x7fffffff), random(0, 0xffff),
                        random(0, 0xfff), random(0x8000, 0xbfff), random(0, 0xffff), random(0, 0x7fffffff))
end

function M.event(with_type)
   counter = counter + 1
   local id
   if UUID_IDS then
      id = uuid4()
   else
      id = string.format("%s-%d-%d-%08x", M.run_id, M.tid, counter, random(0, 0x7fffffff))
   end
   local user = random(1, 100000)
   return string.format(EVENT, with_type and '"type":"track",' or "", id, user,
                        random(0, 0x7fffffff), counter)
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
