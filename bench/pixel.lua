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

-- Standard base64 (what Segment's Pixel API docs show; the gateway also takes the URL-safe
-- alphabet and missing padding), sent as is, not percent-encoded, like the docs' examples: the
-- gateway turns a "+" that the query-string decoding made a space back into "+".
local b64 = common.b64

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

function request()
   return wrk.format("GET", path(), HEADERS)
end

-- request_body_bytes is the length of the request target (path + query), event_bytes that of
-- the JSON message before base64.
function done(summary, latency, requests)
   common.report(summary, latency, 1, path(), #PREFIX + #rest())
end
