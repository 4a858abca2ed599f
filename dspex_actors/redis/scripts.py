"""How a RedisState session lives in Redis: its keys, and the Lua scripts that change them.

A fixed set of keys per session, all under one hash tag (``{<session id>}``, with
``%``, ``{`` and ``}`` escaped, so every key parses one way and a Redis Cluster keeps
them on one slot, where one script may touch them all)::

    dspex:{S}:session           hash   incarnation, ttl_ms, created_at, next_seq,
                                       next_ord, creator (the request id that made
                                       it); pending and final_ttl_ms while a
                                       migration's copy is uncommitted; the
                                       session's metadata as m:<key>
    dspex:{S}:names             hash   name -> variable id
    dspex:{S}:order             zset   variable id scored by its ordinal (creation order)
    dspex:{S}:vars              hash   per variable id: n:<id> name, d:<id> definition
                                       (msgpack [type, constraints]), v:<id> value
                                       (msgpack), r:<id> version, m:<id> metadata
                                       (msgpack), c:<id> created_at, u:<id> updated_at
    dspex:{S}:requests          hash   request id -> the reply of that write
    dspex:{S}:request-expiry    zset   request id scored by when it may be forgotten
    dspex:{S}:events:<inc>      stream one entry per change event, id "<sequence>-0"

A fixed number of keys, not one per variable, keeps a TTL refresh at seven
``PEXPIRE``\\s whatever the session holds. An ordinal is given to each variable
when it is registered or imported and never again, so (id, ordinal) names one
variable for good: a client may cache its definition under it.

Every script takes the keys in that order and the handle's incarnation as
``ARGV[1]``, and answers ``DSPEX_GONE`` (an error reply) when the session is absent
or another incarnation. A write also takes its request id, the stream's history
and how long to remember its reply (seconds; then, after a space, its deadline as
an instant in Unix ms, when it has one) as ``ARGV[2..4]``, and answers a
msgpack array (``{'ok', ...}`` or a refusal such as ``{'not_found'}``), remembered
under its request id so that a retry gets the same answer (``SETTLE`` leaves a
refusal there instead, and a write arriving after its deadline leaves one too, so
a write settled as not applied never applies). A script checks
everything before its first write: Redis does not roll a script back.

Lua never decodes values, metadata or constraints (its numbers are doubles): it
copies their bytes, and compares versions as decimal strings.

Expiry: every use gives all the session's keys its TTL again once the session's
remaining TTL has fallen a hundredth below it, not on every call, since a read
that writes costs several times one that does not (each ``PEXPIRE`` is propagated):
a session expires 0.99 to 1 TTL after its last use. A write also gives the TTL to
any key it made (a key without one would outlive the session); a heartbeat
(``INFO`` with ``ARGV[2] == '1'``) resets every key's TTL at once.

**Length.** Past 600 lines on purpose: the Lua of every script, which share one
prelude, one key layout and one reply format. Read together they show what one
script may assume of another (the TTL refresh, the remembered replies, the event
stream); split, each rule would be stated far from the scripts that rely on it.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from dspex_actors.vartypes import MAX_VERSION

__all__ = [
    "CLOSE",
    "COMMIT",
    "DELETE",
    "DESCRIBE",
    "DUMP",
    "DUMP_PAGE",
    "DUMP_SINCE",
    "FIRST_EVENT",
    "GET",
    "GET_MANY",
    "IMPORT",
    "INFO",
    "NAMES",
    "OPEN",
    "RECORD",
    "REGISTER",
    "REPLIES",
    "RESUME",
    "SET",
    "SETTLE",
    "UPDATE",
    "Script",
    "session_keys",
]

_PRELUDE = """
local K_SESSION, K_NAMES, K_ORDER, K_VARS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_REQUESTS, K_EXPIRY, K_EVENTS = KEYS[5], KEYS[6], KEYS[7]

local function live()
  local s = redis.call('HMGET', K_SESSION, 'incarnation', 'ttl_ms')
  if s[1] ~= ARGV[1] then return nil end
  return tonumber(s[2])
end

local function gone()
  return redis.error_reply('DSPEX_GONE session not found')
end

local function stale(ttl)
  return ttl > 0 and redis.call('PTTL', K_SESSION) < ttl - math.ceil(ttl / 100)
end

-- A read's refresh: every key, once the session's TTL has run down a hundredth.
local function touch(ttl)
  if stale(ttl) then
    for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end

-- A write's refresh: as a read's, and a key the write just made gets the TTL too.
local function refresh(ttl)
  if ttl <= 0 then return end
  local all = stale(ttl)
  for i = 1, #KEYS do
    if all or redis.call('PTTL', KEYS[i]) == -1 then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end

local function now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end

local function resolve(identifier)
  local id = redis.call('HGET', K_NAMES, identifier)
  if id then return id end
  if redis.call('HEXISTS', K_VARS, 'n:' .. identifier) == 1 then return identifier end
  return nil
end

local function row(out, id)
  local f = redis.call('HMGET', K_VARS, 'n:' .. id, 'd:' .. id, 'v:' .. id, 'r:' .. id,
    'm:' .. id, 'c:' .. id, 'u:' .. id)
  out[#out + 1] = id
  for i = 1, 7 do out[#out + 1] = f[i] end
end

-- The session's metadata appended to out, as key, msgpack value pairs; how many.
local function metadata(out)
  local fields, n = redis.call('HGETALL', K_SESSION), 0
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 2) == 'm:' then
      out[#out + 1] = string.sub(fields[i], 3)
      out[#out + 1] = fields[i + 1]
      n = n + 1
    end
  end
  return n
end
"""

_WRITE_PRELUDE = (
    f"""
local MAX_VERSION = '{MAX_VERSION}'
"""
    + """
-- ARGV[4]: seconds to remember the reply; then, after a space, the sender's deadline
-- as an instant (Unix ms), when it set one.
local RID, HISTORY = ARGV[2], ARGV[3]
local RETAIN, EXPIRES = string.match(ARGV[4], '^(%d+) ?(%d*)$')
RETAIN = tonumber(RETAIN)

local TTL = live()

-- The reply, remembered under the request id (a retry gets it again), after which
-- every key of the session (those just made too) gets the session's TTL again.
local function answer(reply)
  local packed = cmsgpack.pack(reply)
  if RID ~= '' then
    local t = tonumber(redis.call('TIME')[1])
    redis.call('HSET', K_REQUESTS, RID, packed)
    redis.call('ZADD', K_EXPIRY, t + RETAIN, RID)
    local old = redis.call('ZRANGEBYSCORE', K_EXPIRY, '-inf', t, 'LIMIT', 0, 16)
    for i = 1, #old do
      redis.call('HDEL', K_REQUESTS, old[i])
      redis.call('ZREM', K_EXPIRY, old[i])
    end
  end
  refresh(TTL)
  return packed
end

-- A write's first step: the reply remembered under its request id (a retry's, or a
-- refusal Settle left there), or a refusal, remembered, when it arrives after its
-- deadline (delayed in transit), or nil: go on.
local function replayed()
  if RID ~= '' then
    local seen = redis.call('HGET', K_REQUESTS, RID)
    if seen then
      -- Written again, so that this call is a write: a WAIT after it (?wait=N)
      -- then covers the first attempt's write too, which came before it.
      redis.call('HSET', K_REQUESTS, RID, seen)
      return seen
    end
  end
  if EXPIRES ~= '' then
    local t = redis.call('TIME')
    if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(EXPIRES) then
      return answer({'not_applied'})
    end
  end
  return nil
end

local function reserve(n)
  return redis.call('HINCRBY', K_SESSION, 'next_seq', n) - n
end

local function event(seq, kind, id, name, value, version, meta, t)
  if value then
    redis.call('XADD', K_EVENTS, 'MAXLEN', '~', HISTORY, seq .. '-0', 'k', kind, 'i', id,
      'n', name, 'r', version, 'm', meta, 't', t, 'v', value)
  else
    redis.call('XADD', K_EVENTS, 'MAXLEN', '~', HISTORY, seq .. '-0', 'k', kind, 'i', id,
      'n', name, 'r', version, 'm', meta, 't', t)
  end
end

local function bump(id)
  local n = redis.call('HINCRBY', K_VARS, 'r:' .. id, 1)
  if n < 9007199254740992 then return string.format('%d', n) end
  return redis.call('HGET', K_VARS, 'r:' .. id)
end

local function same_variable(id, cached_id, ordinal)
  return id == cached_id and tonumber(redis.call('ZSCORE', K_ORDER, id)) == tonumber(ordinal)
end
"""
)

_OPEN_LUA = """
-- ARGV: incarnation, create, ttl_ms, pending, creator request id, pending ttl_ms,
-- exact, then the new session's metadata as key, msgpack value pairs.
-- An attach naming the session's own incarnation (its creator's) reaches it pending
-- too; with `exact` ('1') it reaches only that incarnation, touching no other.
local s = redis.call('HMGET', K_SESSION, 'incarnation', 'ttl_ms', 'pending', 'creator')
if s[1] then
  if s[1] == ARGV[1] then
    refresh(tonumber(s[2]))
    return {0, s[1], s[2]}
  end
  if ARGV[7] == '1' then return {-1} end
  if ARGV[5] ~= '' and s[4] == ARGV[5] then  -- the creator's retry: still its creation
    refresh(tonumber(s[2]))
    return {1, s[1], s[2]}
  end
  if ARGV[4] == '1' or s[3] == '1' then
    if ARGV[2] ~= '1' and s[3] == '1' then return {-1} end
    return {-2, s[3] or '0'}
  end
  refresh(tonumber(s[2]))
  return {0, s[1], s[2]}
end
if ARGV[2] ~= '1' then return {-1} end
local ttl = ARGV[3]
redis.call('HSET', K_SESSION, 'incarnation', ARGV[1], 'ttl_ms', ttl, 'created_at', now(),
  'next_seq', 1, 'next_ord', 0, 'creator', ARGV[5])
if ARGV[4] == '1' then  -- a migration's copy: short-lived and invisible until committed
  local short = tonumber(ARGV[6])
  if tonumber(ttl) == 0 or tonumber(ttl) > short then ttl = ARGV[6] end
  redis.call('HSET', K_SESSION, 'pending', '1', 'ttl_ms', ttl, 'final_ttl_ms', ARGV[3])
end
for i = 8, #ARGV, 2 do redis.call('HSET', K_SESSION, 'm:' .. ARGV[i], ARGV[i + 1]) end
refresh(tonumber(ttl))
return {1, ARGV[1], ttl}
"""

_COMMIT_LUA = """
if not live() then return gone() end
local final = redis.call('HGET', K_SESSION, 'final_ttl_ms')
if not final then return redis.call('HGET', K_SESSION, 'ttl_ms') end  -- committed already
redis.call('HSET', K_SESSION, 'ttl_ms', final)
redis.call('HDEL', K_SESSION, 'pending', 'final_ttl_ms')
for i = 1, #KEYS do
  if tonumber(final) > 0 then redis.call('PEXPIRE', KEYS[i], final)
  else redis.call('PERSIST', KEYS[i]) end
end
return final
"""

_GET_LUA = """
local ttl = live()
if not ttl then return gone() end
touch(ttl)
local id = resolve(ARGV[2])
if not id then return false end
return redis.call('HGET', K_VARS, 'v:' .. id)
"""

_GET_MANY_LUA = """
local ttl = live()
if not ttl then return gone() end
touch(ttl)
local out = {}
for i = 2, #ARGV do
  local id = resolve(ARGV[i])
  out[i - 1] = id and redis.call('HGET', K_VARS, 'v:' .. id) or false
end
return out
"""

_RECORD_LUA = """
local ttl = live()
if not ttl then return gone() end
touch(ttl)
local id = resolve(ARGV[2])
if not id then return false end
local out = {}
row(out, id)
return out
"""

_DESCRIBE_LUA = """
local ttl = live()
if not ttl then return gone() end
touch(ttl)
local out = {}
for i = 2, #ARGV do
  local id = resolve(ARGV[i])
  if id then
    local f = redis.call('HMGET', K_VARS, 'n:' .. id, 'd:' .. id, 'r:' .. id, 'm:' .. id)
    out[#out + 1] = id
    out[#out + 1] = redis.call('ZSCORE', K_ORDER, id)
    for j = 1, 4 do out[#out + 1] = f[j] end
  else
    for j = 1, 6 do out[#out + 1] = false end
  end
end
return out
"""

_DUMP_PAGE_LUA = """
local ttl = live()
if not ttl then return gone() end
touch(ttl)
local s = redis.call('HMGET', K_SESSION, 'next_seq', 'next_ord')
local out = {s[1], ARGV[2], s[2] or 0, 0}
out[4] = metadata(out)
local page = redis.call('ZRANGEBYSCORE', K_ORDER, '(' .. ARGV[2], '+inf', 'WITHSCORES',
  'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #page, 2 do
  row(out, page[i])
  out[2] = page[i + 1]
end
return out
"""

_DUMP_SINCE_LUA = """
local ttl = live()
if not ttl then return gone() end
touch(ttl)
local since = tonumber(ARGV[2])
local next_seq = redis.call('HGET', K_SESSION, 'next_seq')
if tonumber(next_seq) > since then
  local oldest = redis.call('XRANGE', K_EVENTS, '-', '+', 'COUNT', 1)
  if #oldest == 0 or tonumber(string.match(oldest[1][1], '^(%d+)')) > since then
    return {next_seq, -1}
  end
end
local ids = redis.call('ZRANGE', K_ORDER, 0, -1)
local out = {next_seq, #ids}
for i = 1, #ids do out[#out + 1] = ids[i] end
local changed = {}
for _, entry in ipairs(redis.call('XRANGE', K_EVENTS, since .. '-0', '+')) do
  local f = entry[2]
  for j = 1, #f, 2 do
    if f[j] == 'i' then changed[f[j + 1]] = true end
  end
end
for id in pairs(changed) do
  if redis.call('ZSCORE', K_ORDER, id) then row(out, id) end
end
return out
"""

_DUMP_LUA = """
local ttl = live()
if not ttl then return gone() end
touch(ttl)
local out = {redis.call('HGET', K_SESSION, 'next_seq'), 0}
out[2] = metadata(out)
local ids = redis.call('ZRANGE', K_ORDER, 0, -1)
for i = 1, #ids do row(out, ids[i]) end
return out
"""

_FIRST_EVENT_LUA = """
if not live() then return gone() end
local first = redis.call('XRANGE', K_EVENTS, '-', '+', 'COUNT', 1)
if #first == 0 then return redis.call('HGET', K_SESSION, 'next_seq') end
return string.match(first[1][1], '^(%d+)')
"""

_NAMES_LUA = """
local ttl = live()
if not ttl then return gone() end
return redis.call('HGETALL', K_NAMES)
"""

_INFO_LUA = """
local ttl = live()
if not ttl then return gone() end
if ARGV[2] == '1' and ttl > 0 then  -- a heartbeat: every key's whole TTL, now
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl) end
else
  touch(ttl)
end
local s = redis.call('HMGET', K_SESSION, 'next_seq', 'created_at')
local out = {s[1], redis.call('ZCARD', K_ORDER), s[2], ttl, redis.call('PTTL', K_SESSION)}
if ARGV[3] == '1' then metadata(out) end  -- and the session's metadata
return out
"""

_REPLIES_LUA = """
if not live() then return gone() end
return redis.call('HMGET', K_REQUESTS, unpack(ARGV, 2))
"""

_REGISTER_LUA = """
if not TTL then return gone() end
local seen = replayed()
if seen then return seen end
local name, id = ARGV[5], ARGV[6]
local function taken(key)
  return redis.call('HEXISTS', K_NAMES, key) == 1
    or redis.call('HEXISTS', K_VARS, 'n:' .. key) == 1
end
if taken(name) then return answer({'exists'}) end
if taken(id) then return answer({'id_taken'}) end
local held = redis.call('ZCARD', K_ORDER)
if held + 1 > tonumber(ARGV[10]) then return answer({'limit', held}) end
local ordinal = redis.call('HINCRBY', K_SESSION, 'next_ord', 1)
local t = now()
redis.call('ZADD', K_ORDER, ordinal, id)
redis.call('HSET', K_NAMES, name, id)
redis.call('HSET', K_VARS, 'n:' .. id, name, 'd:' .. id, ARGV[7], 'v:' .. id, ARGV[8],
  'r:' .. id, '0', 'm:' .. id, ARGV[9], 'c:' .. id, t, 'u:' .. id, t)
event(reserve(1), 'registered', id, name, ARGV[8], '0', ARGV[9], t)
return answer({'ok', ordinal, t, id})
"""

_SET_LUA = """
if not TTL then return gone() end
local seen = replayed()
if seen then return seen end
local id = resolve(ARGV[5])
if not id then return answer({'not_found'}) end
if not same_variable(id, ARGV[6], ARGV[7]) then return answer({'stale'}) end
local version = redis.call('HGET', K_VARS, 'r:' .. id)
if ARGV[8] ~= '' and ARGV[8] ~= version then return answer({'conflict', version}) end
if ARGV[9] ~= '' and ARGV[9] ~= version then return answer({'moved'}) end
if version == MAX_VERSION then return answer({'overflow'}) end
local new = bump(id)
local t = now()
local meta = ARGV[11]
if meta == '' then
  redis.call('HSET', K_VARS, 'v:' .. id, ARGV[10], 'u:' .. id, t)
  meta = redis.call('HGET', K_VARS, 'm:' .. id)
else
  redis.call('HSET', K_VARS, 'v:' .. id, ARGV[10], 'u:' .. id, t, 'm:' .. id, meta)
end
event(reserve(1), 'updated', id, redis.call('HGET', K_VARS, 'n:' .. id), ARGV[10], new, meta, t)
return answer({'ok', new})
"""

_UPDATE_LUA = """
if not TTL then return gone() end
local seen = replayed()
if seen then return seen end
local n, merging = tonumber(ARGV[5]), ARGV[6] == '1'
local ids, missing, stale = {}, {}, {}
for i = 0, n - 1 do
  local a = 7 + i * 6
  local id = resolve(ARGV[a])
  if not id then
    missing[#missing + 1] = ARGV[a]
  elseif not same_variable(id, ARGV[a + 1], ARGV[a + 2]) then
    stale[#stale + 1] = ARGV[a]
  else
    local version = redis.call('HGET', K_VARS, 'r:' .. id)
    if merging and ARGV[a + 3] ~= version then return answer({'moved'}) end
    if version == MAX_VERSION then return answer({'overflow', ARGV[a]}) end
    ids[i] = id
  end
end
if #missing > 0 then return answer({'not_found', missing}) end
if #stale > 0 then return answer({'stale', stale}) end
local t = now()
local first = reserve(n)
local versions = {}
for i = 0, n - 1 do
  local a, id = 7 + i * 6, ids[i]
  local new = bump(id)
  local meta = ARGV[a + 5]
  if meta == '' then
    redis.call('HSET', K_VARS, 'v:' .. id, ARGV[a + 4], 'u:' .. id, t)
    meta = redis.call('HGET', K_VARS, 'm:' .. id)
  else
    redis.call('HSET', K_VARS, 'v:' .. id, ARGV[a + 4], 'u:' .. id, t, 'm:' .. id, meta)
  end
  event(first + i, 'updated', id, redis.call('HGET', K_VARS, 'n:' .. id), ARGV[a + 4], new,
    meta, t)
  versions[i + 1] = new
end
return answer({'ok', versions, first + n})
"""

_DELETE_LUA = """
if not TTL then return gone() end
local seen = replayed()
if seen then return seen end
local id = resolve(ARGV[5])
if not id then return answer({'not_found'}) end
local f = redis.call('HMGET', K_VARS, 'n:' .. id, 'r:' .. id, 'm:' .. id)
redis.call('ZREM', K_ORDER, id)
redis.call('HDEL', K_NAMES, f[1])
redis.call('HDEL', K_VARS, 'n:' .. id, 'd:' .. id, 'v:' .. id, 'r:' .. id, 'm:' .. id,
  'c:' .. id, 'u:' .. id)
event(reserve(1), 'deleted', id, f[1], false, f[2], f[3], now())
return answer({'ok', id, f[1]})
"""

_IMPORT_LUA = """
if not TTL then return gone() end
local seen = replayed()
if seen then return seen end
-- ARGV[5]: a migration's copy continues the event sequence from it and yields no
-- events ('' otherwise); ARGV[6]: the variable limit.
local quiet = ARGV[5] ~= ''
local count, pairs_ = tonumber(ARGV[7]), tonumber(ARGV[8])
local base = 9 + pairs_ * 2
local held = redis.call('ZCARD', K_ORDER)
if held + count > tonumber(ARGV[6]) then return answer({'limit', held}) end
local function clash(key)
  if redis.call('HEXISTS', K_NAMES, key) == 1 then return {'exists', key, 'name', key} end
  local owner = redis.call('HGET', K_VARS, 'n:' .. key)
  if owner then return {'exists', key, 'id', owner} end
  return nil
end
for offset = 1, 0, -1 do  -- names first, then ids, as the session actor checks them
  for i = 0, count - 1 do
    local found = clash(ARGV[base + i * 8 + offset])
    if found then return answer(found) end
  end
end
for i = 0, pairs_ - 1 do
  redis.call('HSET', K_SESSION, 'm:' .. ARGV[9 + i * 2], ARGV[10 + i * 2])
end
local first = 0
if quiet then
  local next_seq = tonumber(redis.call('HGET', K_SESSION, 'next_seq'))
  if tonumber(ARGV[5]) > next_seq then redis.call('HSET', K_SESSION, 'next_seq', ARGV[5]) end
else
  first = reserve(count)
end
local ordinal = redis.call('HINCRBY', K_SESSION, 'next_ord', count) - count
-- Fields go in batches: one HSET or ZADD per few hundred variables, not per variable
-- (unpack stays under Lua's limit of 8000 values).
local fields, names, order = {}, {}, {}
local function flush()
  if #fields > 0 then
    redis.call('HSET', K_VARS, unpack(fields))
    redis.call('HSET', K_NAMES, unpack(names))
    redis.call('ZADD', K_ORDER, unpack(order))
    fields, names, order = {}, {}, {}
  end
end
for i = 0, count - 1 do
  local a = base + i * 8
  local id, name = ARGV[a], ARGV[a + 1]
  local f = #fields
  fields[f + 1], fields[f + 2] = 'n:' .. id, name
  fields[f + 3], fields[f + 4] = 'd:' .. id, ARGV[a + 2]
  fields[f + 5], fields[f + 6] = 'v:' .. id, ARGV[a + 3]
  fields[f + 7], fields[f + 8] = 'r:' .. id, ARGV[a + 4]
  fields[f + 9], fields[f + 10] = 'm:' .. id, ARGV[a + 5]
  fields[f + 11], fields[f + 12] = 'c:' .. id, ARGV[a + 6]
  fields[f + 13], fields[f + 14] = 'u:' .. id, ARGV[a + 7]
  names[#names + 1], names[#names + 2] = name, id
  order[#order + 1], order[#order + 2] = ordinal + i + 1, id
  if not quiet then
    event(first + i, 'registered', id, name, ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 7])
  end
  if #fields >= 7000 then flush() end
end
flush()
return answer({'ok'})
"""

_SETTLE_LUA = """
-- ARGV: incarnation, seconds to remember a refusal, then the request ids one write
-- sends, in order (one, or a relayed write's chain). 1 if one of them was applied;
-- else 0, after a refusal is remembered under the first id not yet used, so that
-- the write, arriving late there, is refused and the chain can never apply.
local ttl = live()
if not ttl then return gone() end
for i = 3, #ARGV do
  local packed = redis.call('HGET', K_REQUESTS, ARGV[i])
  if not packed then
    local t = tonumber(redis.call('TIME')[1])
    redis.call('HSET', K_REQUESTS, ARGV[i], cmsgpack.pack({'not_applied'}))
    redis.call('ZADD', K_EXPIRY, t + tonumber(ARGV[2]), ARGV[i])
    refresh(ttl)
    return 0
  end
  local code = cmsgpack.unpack(packed)[1]
  if code == 'ok' then return 1 end
  if code == 'not_applied' then return 0 end
end
return 0
"""

_RESUME_LUA = """
-- ARGV: incarnation, a reader's cursor, the mark of the entry before it (its k, i, r
-- and t fields; '' when not known), '1' when the reader feeds a log of its own.
-- Whether the stream still holds what the reader read, after it connected again:
-- a failover may have lost the last events, and then given their sequences to
-- new ones.
if not live() then return {'gone'} end
local cursor = tonumber(ARGV[2])
local before = cursor - 1
if before < 1 then return {'same', ''} end
local next_seq = tonumber(redis.call('HGET', K_SESSION, 'next_seq'))
local entry = redis.call('XRANGE', K_EVENTS, before .. '-0', before .. '-0')
if #entry > 0 then
  local m, f = {}, entry[1][2]
  for j = 1, #f, 2 do m[f[j]] = f[j + 1] end
  local seen = (m.k or '') .. '|' .. (m.i or '') .. '|' .. (m.r or '') .. '|' .. (m.t or '')
  if ARGV[3] == '' or ARGV[3] == seen then return {'same', seen} end
elseif ARGV[3] ~= '' then  -- read by this reader: trimmed since, or lost
  local first = redis.call('XRANGE', K_EVENTS, '-', '+', 'COUNT', 1)
  if #first > 0 and tonumber(string.match(first[1][1], '^(%d+)')) > before then
    return {'same', ''}  -- trimmed: the reader's own read tells overflow
  end
elseif next_seq > before then
  return {'same', ''}  -- never read: trimmed, or a number an import skipped
end
-- Lost. The session's next events get numbers from the cursor on, where the reader
-- looks. A reader feeding a log goes on past the present (skipping a number if
-- need be), so that the log's own readers, all at or before its cursor, are told.
if ARGV[4] == '1' then cursor = math.max(next_seq, cursor + 1) end
if next_seq < cursor then redis.call('HSET', K_SESSION, 'next_seq', cursor) end
return {'lost', cursor}
"""

_CLOSE_LUA = """
if not live() then return gone() end
local seq = redis.call('HGET', K_SESSION, 'next_seq')
redis.call('XADD', K_EVENTS, seq .. '-0', 'k', 'closed')
redis.call('PEXPIRE', K_EVENTS, ARGV[2])
redis.call('UNLINK', K_SESSION, K_NAMES, K_ORDER, K_VARS, K_REQUESTS, K_EXPIRY)
return 1
"""


class Script(NamedTuple):
    """A Lua script, sent by its SHA1 (``EVALSHA``), in full only when Redis lacks it."""

    name: str
    text: str
    sha: str


def _script(body: str, name: str, *, write: bool = False) -> Script:
    text = _PRELUDE + (_WRITE_PRELUDE if write else "") + body
    return Script(name, text, hashlib.sha1(text.encode()).hexdigest())


OPEN = _script(_OPEN_LUA, "open")
"""Attach to a session or create it: ``{1|0, incarnation, ttl_ms}``; ``{-1}`` absent (or
pending, to an attach); ``{-2, pending}`` taken, to a pending open or by a pending one."""
COMMIT = _script(_COMMIT_LUA, "commit")
"""Make a pending session visible, with its whole TTL; idempotent. Answers its TTL (ms)."""
GET = _script(_GET_LUA, "get")
GET_MANY = _script(_GET_MANY_LUA, "get_many")
RECORD = _script(_RECORD_LUA, "record")
DESCRIBE = _script(_DESCRIBE_LUA, "describe")
DUMP = _script(_DUMP_LUA, "dump")
DUMP_PAGE = _script(_DUMP_PAGE_LUA, "dump_page")
"""Part of a session: ``{next_seq, last ordinal read, last ordinal given, pairs,
metadata..., rows...}``, the rows of the (at most ``ARGV[3]``) first variables in
creation order whose ordinal is above ``ARGV[2]`` (ordinals never change: pages
neither skip nor repeat a variable that stays)."""
DUMP_SINCE = _script(_DUMP_SINCE_LUA, "dump_since")
"""What changed since sequence ``ARGV[2]``: ``{next_seq, n, n ids in creation order,
the rows of those changed since}``; ``{next_seq, -1}`` when the stream no longer
holds every event since then."""
NAMES = _script(_NAMES_LUA, "names")
FIRST_EVENT = _script(_FIRST_EVENT_LUA, "first_event")
"""The sequence of the oldest event the session's stream holds (its next one if none)."""
INFO = _script(_INFO_LUA, "info")
"""The session's counters; with ``ARGV[2] == '1'`` (a heartbeat) every key's TTL is reset;
with ``ARGV[3] == '1'`` its metadata follows."""
REPLIES = _script(_REPLIES_LUA, "replies")
"""The remembered replies of the request ids given (nil where none is)."""
SETTLE = _script(_SETTLE_LUA, "settle")
"""Whether a write was applied (1), or make sure it never will be (0)."""
REGISTER = _script(_REGISTER_LUA, "register", write=True)
SET = _script(_SET_LUA, "set", write=True)
UPDATE = _script(_UPDATE_LUA, "update", write=True)
DELETE = _script(_DELETE_LUA, "delete", write=True)
IMPORT = _script(_IMPORT_LUA, "import", write=True)
RESUME = _script(_RESUME_LUA, "resume")
"""Whether a reader's stream still holds what it read: ``{'same', mark}``;
``{'lost', cursor}`` (it does not: events it read are gone, or another event now
has the number of one; the reader tells ``overflow`` and goes on from the cursor
given, below which no new event is numbered); ``{'gone'}``."""
CLOSE = _script(_CLOSE_LUA, "close")


def _key_tag(session_id: str) -> str:
    """The session id as a hash tag: no ``{`` or ``}`` in it, so keys parse one way."""
    return session_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def session_keys(session_id: str, incarnation: str) -> tuple[str, ...]:
    """The keys of one incarnation of a session, in the order every script takes them."""
    base = f"dspex:{{{_key_tag(session_id)}}}"
    return (
        f"{base}:session",
        f"{base}:names",
        f"{base}:order",
        f"{base}:vars",
        f"{base}:requests",
        f"{base}:request-expiry",
        f"{base}:events:{incarnation}",
    )
