-- wrk script: Pixel API, GET /v1/pixel/track?data=<base64 of a JSON track message>, the way an
-- email open or a landing-page <img> reports an event. The message carries the writeKey (no
-- Authorization header: an <img> cannot send one) and a messageId that is unique per request
-- (run id + wrk thread id + counter + random, as in common.lua), so the gateway's dedup can never
-- short-cut the write path. The base64 is computed per request (all but a constant prefix).
--
-- Run: BENCH_WRITE_KEY=... wrk -t1 -c32 -d10s -s bench/pixel.lua http://127.0.0.1:PORT
-- The same script drives the bare GIF app and nginx (they ignore the query string).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

local byte, char, unpack = string.byte, string.char, unpack or table.unpack

-- Standard base64 (what Segment's Pixel API docs show; the gateway also takes the URL-safe
-- alphabet and missing padding). Sent as is, not percent-encoded, like the docs' examples: the
-- gateway turns a "+" that the query-string decoding made a space back into "+".
-- Written for speed (wrk has one core and also drives nginx): character codes into a reused
-- table, one string.char at the end, and a precomputed encoding of the message's constant
-- prefix (see PREFIX).
local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local CODE = {}
for i = 0, 63 do
   CODE[i] = byte(ALPHABET, i + 1)
end
local PAD = byte("=")
local out = {}

local function b64(s)
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

-- An email-open event (about 285 bytes of JSON, about 380 bytes of base64). PREFIX is the same
-- in every message: padded with spaces (valid JSON whitespace) to a multiple of 3 bytes, its
-- base64 is computed once and the rest is encoded per request.
local PREFIX = '{"writeKey":"' .. common.write_key .. '","event":"Email Opened",'
   .. '"timestamp":"2024-05-01T12:00:00.000Z","properties":{"subject":"The Electric Daily",'
PREFIX = PREFIX .. string.rep(" ", (3 - #PREFIX % 3) % 3)
local PREFIX_B64 = b64(PREFIX)
local REST = '"email":"user-%d@example.com","campaign":"spring-sale-%d","emailId":"em-%08x"},'
   .. '"messageId":"%s","userId":"user-%d"}'

-- What a webmail image proxy sends: the gateway stores it as context.userAgent.
local HEADERS = {
   ["User-Agent"] = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
}

local counter = 0

-- The part of the message after PREFIX, new for every request.
local function rest()
   counter = counter + 1
   local id = string.format("%s-%d-%d-%08x", common.run_id, common.tid, counter, math.random(0, 0x7fffffff))
   local user = math.random(1, 100000)
   return string.format(REST, user, math.random(1, 50), math.random(0, 0x7fffffff), id, user)
end

local function path()
   return "/v1/pixel/track?data=" .. PREFIX_B64 .. b64(rest())
end

local next_tid = 0
function setup(thread)
   next_tid = next_tid + 1
   thread:set("tid", next_tid)
end

function init(args)
   common.seed(tid)
end

function request()
   return wrk.format("GET", path(), HEADERS)
end

-- request_body_bytes is the length of the request target (path + query), event_bytes that of
-- the JSON message before base64.
function done(summary, latency, requests)
   common.report(summary, latency, 1, path(), #PREFIX + #rest())
end
