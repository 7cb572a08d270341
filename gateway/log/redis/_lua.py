"""The Redis engine's Lua scripts: every write that must be atomic (append with dedup and books,
a cursor move with its outcomes, a deletion request, purge) is one script, so no crash and no
other gateway can ever see half of it.

Every script gets the log's key prefix (``{name}``, a Cluster hash tag) as ``ARGV[1]`` and the
stream as ``KEYS[1]``; the other keys all carry the same hash tag, so they live in one slot.
Numbers go to Redis through ``string.format('%d')``: Lua's own number formatting turns 1e14
into ``1e+14``.
"""

from __future__ import annotations

# The keys under the prefix P (see the engine's module docstring for what each holds):
#   P:log (stream of s/m/t: source, dedup key, received_at; entry id "<seq>-0"), P:body (hash
#   seq -> body), P:seq (the head), P:last_ms, P:dedup (hash "source\0message_id" -> seq),
#   P:bytes, P:books (hash "source\0outcome\0hour" -> n), P:cursors (hash name -> "seq start"),
#   P:out:<name> (list of "upto\0at\0count\0source\0outcome"), P:lease:<name>, P:read_upto,
#   P:letters (zset of letter ids), P:letter:<id> (hash), P:letter_id, P:deleted (zset of
#   "source\0seq" by seq), P:deletions, P:requests, P:supp (hash), P:supp_v, P:inv (hash).

_PRELUDE = r"""
local P = ARGV[1]
local LOG = KEYS[1]
local function fmt(n) return string.format('%d', n) end
local function seq_of(id) return tonumber(string.match(id, '^(%d+)')) end
local function field(entry, name)
  local f = entry[2]
  for i = 1, #f, 2 do if f[i] == name then return f[i + 1] end end
  return nil
end
local function add_outcome(name, source, outcome, count, upto, at)
  redis.call('RPUSH', P .. ':out:' .. name, table.concat({fmt(upto), fmt(at), fmt(count), source, outcome}, '\0'))
end
local function add_letter(destination, seq, source, body, err, attempts, at, stage)
  local id = redis.call('INCR', P .. ':letter_id')
  redis.call('HSET', P .. ':letter:' .. id, 'd', destination, 'q', fmt(seq), 's', source, 'b', body, 'e', err,
    'a', fmt(attempts), 'f', fmt(at), 'st', 'dead', 'g', stage)
  redis.call('ZADD', P .. ':letters', id, id)
  redis.call('INCRBY', P .. ':bytes', #body + 64)
end
local function drop_letter(id)
  local body = redis.call('HGET', P .. ':letter:' .. id, 'b')
  if not body then return false end
  redis.call('DEL', P .. ':letter:' .. id)
  redis.call('ZREM', P .. ':letters', id)
  redis.call('DECRBY', P .. ':bytes', #body + 64)
  return true
end
-- (source, count, last seq) of each run of consecutive seqs from one source above `after`,
-- from P:deleted or a list of {seq, source} (gateway.log.deleted_runs).
local function runs_of(deleted, after)
  local runs = {}
  for _, d in ipairs(deleted) do
    local seq, source = d[1], d[2]
    if seq > after then
      local last = runs[#runs]
      if last and last[1] == source and last[3] == seq - 1 then
        last[2], last[3] = last[2] + 1, seq
      else
        runs[#runs + 1] = {source, 1, seq}
      end
    end
  end
  return runs
end
local function deleted_above(after)
  local members = redis.call('ZRANGEBYSCORE', P .. ':deleted', '(' .. fmt(after), '+inf')
  local out = {}
  for i, m in ipairs(members) do
    local source, seq = string.match(m, '^(.*)%z(%d+)$')
    out[i] = {tonumber(seq), source}
  end
  return out
end
-- The first stored seq at or after `s` and its received_at (nil when none).
local function next_entry(s)
  local r = redis.call('XRANGE', LOG, fmt(s) .. '-0', '+', 'COUNT', 1)
  if #r == 0 then return nil end
  return seq_of(r[1][1]), tonumber(field(r[1], 't'))
end
-- The first stored seq received at `ms` or later: received_at never decreases along the log.
local function first_from(ms)
  local first = redis.call('XRANGE', LOG, '-', '+', 'COUNT', 1)
  local last = redis.call('XREVRANGE', LOG, '+', '-', 'COUNT', 1)
  if #first == 0 or tonumber(field(last[1], 't')) < ms then return nil end
  local lo, hi = seq_of(first[1][1]), seq_of(last[1][1])
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local _, t = next_entry(mid)
    if t >= ms then hi = mid else lo = mid + 1 end
  end
  return (next_entry(lo))
end
local function head() return tonumber(redis.call('GET', P .. ':seq') or '0') end
"""

#: Store a group commit. ARGV: P, now, the dedup window (ms), then per request: entry count, letter count, counted
#: (1: book stored/duplicates and the tally), tally count, redriven count, then its entries
#: (source, key, body), letters (destination, source, body, error, stage), tally (source,
#: outcome, n) and redriven letter ids. Returns {head, received_at, then per request {stored
#: (-1: a redriven letter was gone, so another gateway redrove it and nothing of it was
#: stored), the 0-based positions of its duplicate entries...}}.
APPEND = (
    "#!lua\n"
    + _PRELUDE
    + r"""
local now = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local last = tonumber(redis.call('GET', P .. ':last_ms') or '0')
if now < last then now = last end
-- Whether `k` ("source\0message_id") is new: not stored within the dedup window. A key whose
-- copy is older takes the new seq (purge and deletion drop a key only while it is their row's).
local function claim(k, seq)
  if redis.call('HSETNX', P .. ':dedup', k, fmt(seq)) == 1 then return true end
  local held = redis.call('HGET', P .. ':dedup', k)
  local r = redis.call('XRANGE', LOG, held .. '-0', held .. '-0')
  if #r > 0 and now - tonumber(field(r[1], 't')) <= window then return false end
  redis.call('HSET', P .. ':dedup', k, fmt(seq))
  return true
end
local group, i = {}, 4
while i <= #ARGV do
  local ne, nl, counted = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), ARGV[i + 2] == '1'
  local nt, nr = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local w = {{}, {}, counted, {}, {}}
  i = i + 5
  for k = 1, ne do w[1][k] = {ARGV[i], ARGV[i + 1], ARGV[i + 2]}; i = i + 3 end
  for k = 1, nl do w[2][k] = {ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]}; i = i + 5 end
  for k = 1, nt do w[4][k] = {ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])}; i = i + 3 end
  for k = 1, nr do w[5][k] = ARGV[i]; i = i + 1 end
  group[#group + 1] = w
end
local hour = math.floor(now / 3600000)
local seq = head()
local start_seq = seq
local now_s = fmt(now)
local bytes = 0
local books = {}
local function book(source, outcome, n)
  if n ~= 0 then
    local k = source .. '\0' .. outcome
    books[k] = (books[k] or 0) + n
  end
end
local results = {}
for i, w in ipairs(group) do
  local entries, letters, counted, tally, redriven = w[1], w[2], w[3], w[4], w[5]
  local live = true
  for _, id in ipairs(redriven) do
    if redis.call('EXISTS', P .. ':letter:' .. id) == 0 then live = false end
  end
  if not live then
    results[i] = {-1}
  else
    local stored, by_source, result = 0, {}, {0}
    for position, e in ipairs(entries) do
      local source, key, body = e[1], e[2], e[3]
      local s = by_source[source]
      if not s then s = {0, 0}; by_source[source] = s end
      if claim(source .. '\0' .. key, seq + 1) then
        seq = seq + 1
        local id = fmt(seq)
        redis.call('XADD', LOG, id .. '-0', 's', source, 'm', key, 't', now_s)
        redis.call('HSET', P .. ':body', id, body)
        bytes = bytes + #body + 64
        stored = stored + 1
        s[1] = s[1] + 1
      else
        s[2] = s[2] + 1
        result[#result + 1] = position - 1
      end
    end
    if counted then
      for source, s in pairs(by_source) do
        book(source, 'stored', s[1])
        book(source, 'duplicates', s[2])
      end
      for _, t in ipairs(tally) do book(t[1], t[2], t[3]) end
    end
    for _, id in ipairs(redriven) do drop_letter(id) end
    for _, x in ipairs(letters) do add_letter(x[1], 0, x[2], x[3], x[4], 1, now, x[5]) end
    result[1] = stored
    results[i] = result
  end
end
for k, n in pairs(books) do redis.call('HINCRBY', P .. ':books', k .. '\0' .. fmt(hour), n) end
if seq > start_seq then
  redis.call('SET', P .. ':seq', fmt(seq))
  redis.call('INCRBY', P .. ':bytes', bytes)
end
if now > last then redis.call('SET', P .. ':last_ms', now_s) end
local out = {seq, now_s}
for i, r in ipairs(results) do out[#out + 1] = r end
return out
"""
)

#: Read records after a seq. ARGV: P, after, max records, max bytes, reader ("" for anyone;
#: "-" records nothing: the offline reader). Returns flat {seq, source, received_at, body...}.
#: Records the highest seq each reader was handed (a deletion tombstones what may be in flight).
READ = (
    _PRELUDE
    + r"""
local after, count, max_bytes, reader = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local r = redis.call('XRANGE', LOG, '(' .. after .. '-0', '+', 'COUNT', count)
local out, size, last = {}, 0, nil
for _, e in ipairs(r) do
  local id = string.match(e[1], '^(%d+)')
  local body = redis.call('HGET', P .. ':body', id)
  if body then
    size = size + #body
    if last and size > max_bytes then break end
    out[#out + 1] = id
    out[#out + 1] = field(e, 's')
    out[#out + 1] = field(e, 't')
    out[#out + 1] = body
    last = tonumber(id)
  end
end
if last and reader ~= '-' then
  local name = reader == '' and '*' or reader
  local upto = tonumber(redis.call('HGET', P .. ':read_upto', name) or '0')
  if last > upto then redis.call('HSET', P .. ':read_upto', name, fmt(last)) end
end
return out
"""
)

#: Create a cursor unless it exists. ARGV: P, name, start_ms ("" for the head), now.
#: Returns its seq.
CURSOR = (
    "#!lua\n"
    + _PRELUDE
    + r"""
local name, start_ms, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local cur = redis.call('HGET', P .. ':cursors', name)
if cur then return tonumber(string.match(cur, '^(%d+)')) end
local h = head()
local start = h
if start_ms ~= '' then
  local first = first_from(tonumber(start_ms))
  if first then start = first - 1 end
  if start < h then
    for _, run in ipairs(runs_of(deleted_above(start), start)) do
      add_outcome(name, run[1], 'filtered:deleted', run[2], run[3], now)
    end
  end
end
redis.call('HSET', P .. ':cursors', name, fmt(start) .. ' ' .. fmt(start))
return start
"""
)

#: Move a cursor, with the outcomes of what it moved over. ARGV: P, name, seq, now, holder,
#: then source, outcome, count triples. Refused (CURSOR_LOST) when another gateway holds it.
SET_CURSOR = (
    "#!lua\n"
    + _PRELUDE
    + r"""
local name, seq, now, holder = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local lease = redis.call('GET', P .. ':lease:' .. name)
if lease and lease ~= holder then return redis.error_reply('CURSOR_LOST held by ' .. lease) end
local cur = redis.call('HGET', P .. ':cursors', name)
local start = seq
if cur then start = tonumber(string.match(cur, ' (%d+)$')) end
redis.call('HSET', P .. ':cursors', name, fmt(seq) .. ' ' .. fmt(start))
for i = 6, #ARGV, 3 do add_outcome(name, ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), seq, now) end
return 1
"""
)

#: Take (or renew) the hold on a cursor. ARGV: P, name, holder, lease ms. Returns {1, seq}
#: (seq -1: no such cursor), or {0, other holder, ms left}.
HOLD = (
    "#!lua\n"
    + _PRELUDE
    + r"""
local key = P .. ':lease:' .. ARGV[2]
local lease = redis.call('GET', key)
if lease and lease ~= ARGV[3] then return {0, lease, redis.call('PTTL', key)} end
redis.call('SET', key, ARGV[3], 'PX', ARGV[4])
local cur = redis.call('HGET', P .. ':cursors', ARGV[2])
if not cur then return {1, -1} end
return {1, tonumber(string.match(cur, '^(%d+)'))}
"""
)

#: Renew holds. ARGV: P, holder, lease ms, names... Returns the names this gateway lost.
RENEW = (
    "#!lua\n"
    + _PRELUDE
    + r"""
local lost = {}
for i = 4, #ARGV do
  local key = P .. ':lease:' .. ARGV[i]
  local lease = redis.call('GET', key)
  if lease == ARGV[2] then redis.call('PEXPIRE', key, ARGV[3])
  elseif lease then lost[#lost + 1] = ARGV[i]
  else redis.call('SET', key, ARGV[2], 'PX', ARGV[3]) end
end
return lost
"""
)

#: Let go of holds. ARGV: P, holder, names...
RELEASE = (
    "#!lua\n"
    + _PRELUDE
    + r"""
for i = 3, #ARGV do
  local key = P .. ':lease:' .. ARGV[i]
  if redis.call('GET', key) == ARGV[2] then redis.call('DEL', key) end
end
return 1
"""
)

#: Remove a cursor and its books. ARGV: P, name.
FORGET_CURSOR = (
    "#!lua\n"
    + _PRELUDE
    + r"""
redis.call('HDEL', P .. ':cursors', ARGV[2])
redis.call('HDEL', P .. ':read_upto', ARGV[2])
redis.call('DEL', P .. ':out:' .. ARGV[2], P .. ':lease:' .. ARGV[2])
return 1
"""
)

#: ``(after, upto)`` of a time range. ARGV: P, since_ms, until_ms ("" for now).
SEQ_RANGE = (
    "#!lua flags=no-writes\n"
    + _PRELUDE
    + r"""
local h = head()
local first = first_from(tonumber(ARGV[2]))
if not first then return {h, h} end
local upto = h
if ARGV[3] ~= '' then
  local stop = first_from(tonumber(ARGV[3]))
  local last = 0
  local r
  if stop then r = redis.call('XREVRANGE', LOG, '(' .. fmt(stop) .. '-0', '-', 'COUNT', 1)
  else r = redis.call('XREVRANGE', LOG, '+', '-', 'COUNT', 1) end
  if #r > 0 then last = seq_of(r[1][1]) end
  upto = math.max(first - 1, last)
end
return {first - 1, upto}
"""
)

#: Everything the books need but the pending counts, read at one moment. ARGV: P.
#: Returns {head, deletions, cursors (flat name, "seq start"), outcomes per cursor (flat
#: name, rows), source books (flat), letters held per destination (flat)}.
BOOKS = (
    "#!lua flags=no-writes\n"
    + _PRELUDE
    + r"""
local cursors = redis.call('HGETALL', P .. ':cursors')
local outcomes = {}
for i = 1, #cursors, 2 do
  outcomes[#outcomes + 1] = cursors[i]
  outcomes[#outcomes + 1] = redis.call('LRANGE', P .. ':out:' .. cursors[i], 0, -1)
end
local held = {}
for _, id in ipairs(redis.call('ZRANGE', P .. ':letters', 0, -1)) do
  local d = redis.call('HGET', P .. ':letter:' .. id, 'd')
  held[d] = (held[d] or 0) + 1
end
local held_flat = {}
for d, n in pairs(held) do held_flat[#held_flat + 1] = d; held_flat[#held_flat + 1] = n end
return {head(), tonumber(redis.call('GET', P .. ':deletions') or '0'), cursors, outcomes,
  redis.call('HGETALL', P .. ':books'), held_flat}
"""
)

#: Count stored messages by source in ``(after, upto]``, a chunk at a time. ARGV: P, after,
#: upto, chunk. Returns {last seq looked at (upto when done), flat source, count...}.
COUNT_SOURCES = (
    "#!lua flags=no-writes\n"
    + _PRELUDE
    + r"""
local upto = tonumber(ARGV[3])
local r = redis.call('XRANGE', LOG, '(' .. ARGV[2] .. '-0', fmt(upto) .. '-0', 'COUNT', ARGV[4])
local counts = {}
for _, e in ipairs(r) do
  local s = field(e, 's')
  counts[s] = (counts[s] or 0) + 1
end
local out = {upto}
if #r == tonumber(ARGV[4]) then out[1] = seq_of(r[#r][1]) end
for s, n in pairs(counts) do out[#out + 1] = s; out[#out + 1] = n end
return out
"""
)

#: Find a user's messages, a chunk at a time. ARGV: P, after, chunk, userId. Returns {last seq
#: looked at (0 when the log ends), seqs...}. A plain substring test first; JSON only then.
FIND_USER = (
    "#!lua flags=no-writes\n"
    + _PRELUDE
    + r"""
local user = ARGV[4]
local r = redis.call('XRANGE', LOG, '(' .. ARGV[2] .. '-0', '+', 'COUNT', ARGV[3])
local out = {0}
if #r == tonumber(ARGV[3]) then out[1] = seq_of(r[#r][1]) end
for _, e in ipairs(r) do
  local id = string.match(e[1], '^(%d+)')
  local body = redis.call('HGET', P .. ':body', id)
  if body and string.find(body, user, 1, true) then
    local ok, msg = pcall(cjson.decode, body)
    if ok and type(msg) == 'table' and msg.userId == user then out[#out + 1] = tonumber(id) end
  end
end
return out
"""
)

#: Carry out a deletion request. ARGV: P, userId, scanned_to, now, candidate seqs (space
#: separated), destinations... Returns {deleted, tombstoned, dead letters deleted, pending per
#: destination (in ARGV order)}.
DELETE_USER = (
    "#!lua\n"
    + _PRELUDE
    + r"""
local user, scanned_to, now = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local function is_users(body)
  if not body or not string.find(body, user, 1, true) then return nil end
  local ok, msg = pcall(cjson.decode, body)
  if ok and type(msg) == 'table' and msg.userId == user then return msg end
  return nil
end
local rows = {}
local function consider(e)
  local id = string.match(e[1], '^(%d+)')
  local msg = is_users(redis.call('HGET', P .. ':body', id))
  if msg then
    local mid = msg.messageId
    if type(mid) ~= 'string' then mid = field(e, 'm') end
    rows[#rows + 1] = {tonumber(id), field(e, 's'), field(e, 'm'), mid}
  end
end
for s in string.gmatch(ARGV[5], '%d+') do
  local r = redis.call('XRANGE', LOG, s .. '-0', s .. '-0')
  if #r > 0 then consider(r[1]) end
end
for _, e in ipairs(redis.call('XRANGE', LOG, '(' .. fmt(scanned_to) .. '-0', '+')) do consider(e) end
local h = head()
local cursors = {}
local flat = redis.call('HGETALL', P .. ':cursors')
local upto = {}
local ups = redis.call('HGETALL', P .. ':read_upto')
for i = 1, #ups, 2 do upto[ups[i]] = tonumber(ups[i + 1]) end
local anyone = upto['*'] or 0
for i = 1, #flat, 2 do
  local c = tonumber(string.match(flat[i + 1], '^(%d+)'))
  cursors[#cursors + 1] = {flat[i], c, math.max(c, upto[flat[i]] or 0, anyone)}
end
local deleted, kept = {}, 0
for _, row in ipairs(rows) do
  local seq, source, key, mid = row[1], row[2], row[3], row[4]
  local in_flight = seq == h
  for _, c in ipairs(cursors) do
    if c[2] < seq and seq <= c[3] then in_flight = true end
  end
  local id = fmt(seq)
  local old = redis.call('HGET', P .. ':body', id)
  if in_flight then
    local stone = '{"messageId":' .. cjson.encode(mid) .. ',"type":"deleted"}'
    redis.call('HSET', P .. ':body', id, stone)
    redis.call('DECRBY', P .. ':bytes', #old - #stone)
    kept = kept + 1
  else
    redis.call('XDEL', LOG, id .. '-0')
    redis.call('HDEL', P .. ':body', id)
    if redis.call('HGET', P .. ':dedup', source .. '\0' .. key) == id then
      redis.call('HDEL', P .. ':dedup', source .. '\0' .. key)
    end
    redis.call('ZADD', P .. ':deleted', seq, source .. '\0' .. id)
    redis.call('DECRBY', P .. ':bytes', #old + 64)
    deleted[#deleted + 1] = {seq, source}
  end
end
local letters = 0
for _, id in ipairs(redis.call('ZRANGE', P .. ':letters', 0, -1)) do
  if is_users(redis.call('HGET', P .. ':letter:' .. id, 'b')) then
    drop_letter(id)
    letters = letters + 1
  end
end
for _, c in ipairs(cursors) do
  for _, run in ipairs(runs_of(deleted, c[2])) do add_outcome(c[1], run[1], 'filtered:deleted', run[2], run[3], now) end
end
redis.call('INCR', P .. ':deletions')
redis.call('RPUSH', P .. ':requests', table.concat({user, fmt(now), fmt(#deleted), fmt(kept), fmt(letters)}, '\0'))
local out = {#deleted, kept, letters}
for i = 6, #ARGV do
  local cur = redis.call('HGET', P .. ':cursors', ARGV[i])
  local at = h
  if cur then at = tonumber(string.match(cur, '^(%d+)')) end
  local n = 0
  for _, row in ipairs(rows) do if row[1] > at then n = n + 1 end end
  out[#out + 1] = n
end
return out
"""
)

#: Purge a chunk from the oldest end: messages up to ``delivered_up_to`` (never the head)
#: received before ``cutoff``. ARGV: P, delivered_up_to, cutoff_ms, chunk. Returns how many went.
PURGE = (
    _PRELUDE
    + r"""
local limit = math.min(tonumber(ARGV[2]), head() - 1)
local cutoff = tonumber(ARGV[3])
if limit < 1 then return 0 end
local r = redis.call('XRANGE', LOG, '-', fmt(limit) .. '-0', 'COUNT', ARGV[4])
local gone, last, bytes = 0, nil, 0
for _, e in ipairs(r) do
  if tonumber(field(e, 't')) >= cutoff then break end
  local id = string.match(e[1], '^(%d+)')
  local body = redis.call('HGET', P .. ':body', id)
  if body then bytes = bytes + #body + 64 end
  redis.call('HDEL', P .. ':body', id)
  local k = field(e, 's') .. '\0' .. field(e, 'm')
  if redis.call('HGET', P .. ':dedup', k) == id then redis.call('HDEL', P .. ':dedup', k) end
  gone, last = gone + 1, tonumber(id)
end
if last then
  redis.call('XTRIM', LOG, 'MINID', fmt(last + 1) .. '-0')
  redis.call('DECRBY', P .. ':bytes', bytes)
  local first = redis.call('XRANGE', LOG, '-', '+', 'COUNT', 1)
  if #first > 0 then redis.call('ZREMRANGEBYSCORE', P .. ':deleted', '-inf', '(' .. fmt(seq_of(first[1][1]))) end
end
return gone
"""
)

#: Keep dead letters of a destination (not the tombstoned: their personal data stays gone).
#: ARGV: P, destination, error, attempts, stage, now, then seq, source, body triples.
ADD_DEAD_LETTERS = (
    "#!lua\n"
    + _PRELUDE
    + r"""
for i = 7, #ARGV, 3 do
  local seq = tonumber(ARGV[i])
  local erased = false
  if seq > 0 then
    local body = redis.call('HGET', P .. ':body', ARGV[i])
    erased = body ~= nil and string.find(body, '"type":"deleted"', 1, true) ~= nil
      and cjson.decode(body).type == 'deleted'
  end
  if not erased then
    add_letter(ARGV[2], seq, ARGV[i + 1], ARGV[i + 2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[6]), ARGV[5])
  end
end
return 1
"""
)

#: Dead letters in order. ARGV: P, destination ("" for all), state ("" for any), limit.
#: Returns flat {id, d, q, s, b, e, a, f, st, g ...}.
LIST_LETTERS = (
    "#!lua flags=no-writes\n"
    + _PRELUDE
    + r"""
local out, n, limit = {}, 0, tonumber(ARGV[4])
for _, id in ipairs(redis.call('ZRANGE', P .. ':letters', 0, -1)) do
  if n >= limit then break end
  local x = redis.call('HMGET', P .. ':letter:' .. id, 'd', 'q', 's', 'b', 'e', 'a', 'f', 'st', 'g')
  if (ARGV[2] == '' or x[1] == ARGV[2]) and (ARGV[3] == '' or x[8] == ARGV[3]) then
    out[#out + 1] = id
    for j = 1, 9 do out[#out + 1] = x[j] end
    n = n + 1
  end
end
return out
"""
)

#: Mark dead letters for redrive or discard them. ARGV: P, action, destination ("" when by
#: ids), ids... Returns how many changed.
CHANGE_LETTERS = (
    "#!lua\n"
    + _PRELUDE
    + r"""
local action, destination = ARGV[2], ARGV[3]
local ids = {}
if destination ~= '' and #ARGV < 4 then
  ids = redis.call('ZRANGE', P .. ':letters', 0, -1)
else
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local changed = 0
for _, id in ipairs(ids) do
  local x = redis.call('HMGET', P .. ':letter:' .. id, 'd', 'st')
  if x[2] == 'dead' and (#ARGV >= 4 or x[1] == destination) then
    if action == 'redrive' then redis.call('HSET', P .. ':letter:' .. id, 'st', 'redrive')
    else drop_letter(id) end
    changed = changed + 1
  end
end
return changed
"""
)

#: Finish a redrive. ARGV: P, destination, cursor seq, now, error, delivered ids (space
#: separated), failed ids, dropped ids, then source, count pairs booked as ``redriven``.
FINISH_REDRIVE = (
    "#!lua\n"
    + _PRELUDE
    + r"""
local destination, cursor, now, err = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
for _, list in ipairs({ARGV[6], ARGV[8]}) do
  for id in string.gmatch(list, '%d+') do drop_letter(id) end
end
for id in string.gmatch(ARGV[7], '%d+') do
  local key = P .. ':letter:' .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'st', 'dead', 'e', err, 'f', fmt(now))
    redis.call('HINCRBY', key, 'a', 1)
  end
end
for i = 9, #ARGV, 2 do add_outcome(destination, ARGV[i], 'redriven', tonumber(ARGV[i + 1]), cursor, now) end
return 1
"""
)

#: Add or remove a suppressed userId. ARGV: P, userId, "1"/"0", now. Returns 1 if it changed.
SET_SUPPRESSED = (
    "#!lua\n"
    + _PRELUDE
    + r"""
local changed
if ARGV[3] == '1' then changed = redis.call('HSETNX', P .. ':supp', ARGV[2], ARGV[4])
else changed = redis.call('HDEL', P .. ':supp', ARGV[2]) end
if changed == 1 then redis.call('INCR', P .. ':supp_v') end
return changed
"""
)

#: Insert or update inventory rows. ARGV: P, then source, path, class, hits JSON, first, last.
SAVE_INVENTORY = (
    "#!lua\n"
    + _PRELUDE
    + r"""
for i = 2, #ARGV, 6 do
  local key = ARGV[i] .. '\0' .. ARGV[i + 1]
  local first, last = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  local old = redis.call('HGET', P .. ':inv', key)
  if old then
    local f, l = string.match(old, '^(%d+)%z(%d+)%z')
    first, last = math.min(first, tonumber(f)), math.max(last, tonumber(l))
  end
  redis.call('HSET', P .. ':inv', key, table.concat({fmt(first), fmt(last), ARGV[i + 2], ARGV[i + 3]}, '\0'))
end
return 1
"""
)

#: A small write that goes through only if Redis takes writes again. ARGV: P, now.
PROBE = (
    "#!lua\n"
    + _PRELUDE
    + r"""
redis.call('SET', P .. ':probed_at', ARGV[2])
return 1
"""
)

#: What waits after a cursor. ARGV: P, cursor. Returns {received_at of the first, average body
#: length of the first 200 (as a string)}.
BACKLOG = (
    "#!lua flags=no-writes\n"
    + _PRELUDE
    + r"""
local r = redis.call('XRANGE', LOG, '(' .. ARGV[2] .. '-0', '+', 'COUNT', 200)
if #r == 0 then return {0, '0'} end
local total = 0
for _, e in ipairs(r) do total = total + redis.call('HSTRLEN', P .. ':body', string.match(e[1], '^(%d+)')) end
return {tonumber(field(r[1], 't')), tostring(total / #r)}
"""
)
