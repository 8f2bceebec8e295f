-- SESSION_WRITE: every write to a session, in one script, so that every write
-- passes the same guards in the same atomic step (one EVALSHA round trip).
--
-- KEYS[1]  the session's hash, e.g. sid_<id>
-- KEYS[2]  renew only: the new key, in the SAME hash slot as KEYS[1] (the
--          caller draws the new id so; see session::slot). Redis Cluster
--          refuses a script whose keys span slots, and this one never does.
--
-- ARGV[1]  op: create | update | renew | incr | cas | adopt (see below)
-- ARGV[2]  idle timeout, ms (the sliding TTL)
-- ARGV[3]  absolute lifetime from creation, ms; 0 = none
-- ARGV[4]  most user fields a session may hold
-- ARGV[5]  most bytes (names + values of user fields) a session may hold
-- create / update / renew:
--   ARGV[6]  "1" to delete every user field first (Session::clear)
--   ARGV[7]  n, the number of fields to delete, then n field names,
--            then field, value, field, value, ... to set
-- incr: ARGV[6] field, ARGV[7] increment (a signed 64-bit integer)
-- cas:  ARGV[6] field, ARGV[7] "1" if a value is expected (else the field
--       must be absent), ARGV[8] that value, ARGV[9] "1" to set (else
--       delete), ARGV[10] the new value
--
-- Replies {status, value}:
--    1  done; value = incr's new value, or cas's '1' (swapped) / '0' (not),
--       as text
--    0  no live session: it never existed, expired, was purged, or outlived
--       its absolute lifetime. NOTHING was written: a write never re-creates
--       a session that is gone (this is how a logout always wins).
--   -1  create / renew: the id is taken. Nothing was written.
--   -2  the session would hold more than max_fields user fields. Nothing written.
--   -3  the session would hold more than max_bytes. Nothing written.
--   -4  incr: the field is not an integer, or the sum overflows. Nothing written.
--
-- Fields named "__..." are the session's own metadata, never user data:
--   __created  creation time, ms since the epoch (anchors the absolute lifetime)
--   __seen     time of the last write or TTL refresh, ms since the epoch

local key = KEYS[1]
local op = ARGV[1]
local idle_ms = tonumber(ARGV[2])
local absolute_ms = tonumber(ARGV[3])
-- ARGV[4] and ARGV[5] (the limits) are parsed only when a write can grow
-- the session: number parsing and printing were a visible part of this
-- script's cost in a profile of Redis (benches/results/).

-- Redis's clock, not the app node's: nodes with skewed clocks still agree.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

-- Integral numbers as text. '%d' formats a C long: exact for these values
-- (times in ms, TTLs, counts below 2^53), and far cheaper than '%.0f'.
local function int(n)
  return string.format('%d', n)
end

-- Set when the live session has no __created (a NestJS node wrote it): the
-- next write stamps it. Sessions we wrote always have it, and it never
-- changes, so it is not rewritten on every write.
local stamp_needed = false

local function is_metadata(field)
  return string.sub(field, 1, 2) == '__'
end

-- The creation time of the live session at k, or nil if there is none, and
-- the value of `field` if one is asked for (false if absent). A session past
-- its absolute lifetime is deleted here and then: its TTL never reaches past
-- that point when we wrote it last, but another writer (a NestJS node) may
-- have stretched it.
local function live_created(k, field)
  -- One call answers everything for every session we wrote: a key exists
  -- exactly when it has fields, and ours always have __created.
  local created, value
  if field then
    local both = redis.call('HMGET', k, '__created', field)
    created, value = tonumber(both[1]), both[2]
  else
    created = tonumber(redis.call('HGET', k, '__created'))
  end
  if not created then
    -- No stamp: no session, or one a NestJS node wrote. Its absolute
    -- lifetime starts now; apply() stamps it.
    if redis.call('EXISTS', k) == 0 then
      return nil
    end
    created = now
    stamp_needed = true
  end
  if absolute_ms > 0 and created + absolute_ms <= now then
    redis.call('DEL', k)
    return nil
  end
  return created, value
end

-- Every check runs before the first write: Redis does not roll back a
-- script that fails halfway, so a write that can fail must fail first.

-- 0 if the session at k (nil: a new one) would stay within the limits after
-- the change, else -2 or -3. Only sets can grow a session, so a change that
-- sets nothing skips the count.
local function check_limits(k, clear, removals, upserts)
  if #upserts == 0 then
    return 0
  end
  -- More names than the session may hold (a name sent twice counts twice:
  -- stricter, never looser). This also bounds the HSET below, whose
  -- arguments go through unpack.
  -- Metadata (a sign-in's __user, a sealed session's __salt) is not counted,
  -- but at most 16 of it rides along: the unpack below stays bounded.
  local sent = 0
  for i = 1, #upserts, 2 do
    if not is_metadata(upserts[i]) then
      sent = sent + 1
    end
  end
  if sent > tonumber(ARGV[4]) or #upserts / 2 > tonumber(ARGV[4]) + 16 then
    return -2
  end
  local fields = {}
  if k and not clear then
    local flat = redis.call('HGETALL', k)
    for i = 1, #flat, 2 do
      fields[flat[i]] = flat[i + 1]
    end
  end
  for _, field in ipairs(removals) do
    fields[field] = nil
  end
  for i = 1, #upserts, 2 do
    fields[upserts[i]] = upserts[i + 1]
  end
  local count, bytes = 0, 0
  for field, value in pairs(fields) do
    if not is_metadata(field) then
      count = count + 1
      bytes = bytes + #field + #value
    end
  end
  if count > tonumber(ARGV[4]) then
    return -2
  end
  if bytes > tonumber(ARGV[5]) then
    return -3
  end
  return 0
end

-- HDEL of any number of fields, in slices: Lua's unpack fails past about
-- 8,000 values, and a failure after the first slice would leave the change
-- half applied.
local function hdel_all(k, fields)
  for first = 1, #fields, 1000 do
    redis.call('HDEL', k, unpack(fields, first, math.min(first + 999, #fields)))
  end
end

-- Applies a change to k and slides its TTL: the idle timeout, cut short by
-- the absolute lifetime. Every write refreshes the TTL. Nothing in it can
-- fail once the checks have passed.
local function apply(k, clear, removals, upserts, created)
  if clear then
    local doomed = {}
    for _, field in ipairs(redis.call('HKEYS', k)) do
      if not is_metadata(field) then
        doomed[#doomed + 1] = field
      end
    end
    hdel_all(k, doomed)
  end
  hdel_all(k, removals)
  -- The metadata keeps the hash non-empty even when every user field is gone.
  if stamp_needed then
    redis.call('HSET', k, '__created', int(created), '__seen', int(now), unpack(upserts))
  else
    redis.call('HSET', k, '__seen', int(now), unpack(upserts))
  end
  local ttl = idle_ms
  if absolute_ms > 0 then
    ttl = math.min(idle_ms, created + absolute_ms - now)
  end
  redis.call('PEXPIRE', k, int(ttl))
end

local function parse_change()
  local clear = ARGV[6] == '1'
  local n = tonumber(ARGV[7])
  local removals, upserts = {}, {}
  for i = 1, n do
    removals[i] = ARGV[7 + i]
  end
  for i = 8 + n, #ARGV do
    upserts[#upserts + 1] = ARGV[i]
  end
  return clear, removals, upserts
end

if op == 'adopt' then
  -- hash_ids migration (never on a cluster, where the two keys live in
  -- different slots): KEYS[1] is the hashed key, KEYS[2] the raw one a node
  -- without hash_ids wrote. Moves it, keeping fields and TTL, if the hashed
  -- key is free. Replies {1, '0'} if the session is now under its hashed key
  -- (moved by this call or by a concurrent one: the caller runs its
  -- operation again either way), {0, '0'} if it is under neither.
  if redis.call('EXISTS', key) == 1 then
    return {1, '0'}
  end
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('RENAME', KEYS[2], key)
    return {1, '0'}
  end
  return {0, '0'}
end

if op == 'create' then
  if redis.call('EXISTS', key) == 1 then
    return {-1, '0'}
  end
  local _, _, upserts = parse_change()
  -- A new session holds exactly the fields it is created with, so the limits
  -- need no table. (A name sent twice counts twice: stricter, never looser.)
  -- Metadata (a sign-in's __user, a sealed session's __salt) counts toward
  -- neither limit, as in check_limits.
  local count, bytes = 0, 0
  for i = 1, #upserts, 2 do
    if not is_metadata(upserts[i]) then
      count = count + 1
      bytes = bytes + #upserts[i] + #upserts[i + 1]
    end
  end
  if count > tonumber(ARGV[4]) or #upserts / 2 > tonumber(ARGV[4]) + 16 then
    return {-2, '0'}
  end
  if bytes > tonumber(ARGV[5]) then
    return {-3, '0'}
  end
  stamp_needed = true
  apply(key, false, {}, upserts, now)
  return {1, '0'}
end

-- incr and cas read their field in the same call as the session's stamp.
local field = nil
if op == 'incr' or op == 'cas' then
  field = ARGV[6]
end
local created, current = live_created(key, field)
if not created then
  return {0, '0'}
end

if op == 'update' then
  local clear, removals, upserts = parse_change()
  local limit = check_limits(key, clear, removals, upserts)
  if limit ~= 0 then
    return {limit, '0'}
  end
  apply(key, clear, removals, upserts, created)
  return {1, '0'}
elseif op == 'renew' then
  -- Fixation defence: the data moves to a fresh id and the old id dies, in
  -- one step. Both keys share a slot, so RENAME is legal on Redis Cluster.
  local new_key = KEYS[2]
  if redis.call('EXISTS', new_key) == 1 then
    return {-1, '0'}
  end
  local clear, removals, upserts = parse_change()
  local limit = check_limits(key, clear, removals, upserts)
  if limit ~= 0 then
    return {limit, '0'}
  end
  redis.call('RENAME', key, new_key)
  apply(new_key, clear, removals, upserts, created)
  return {1, '0'}
elseif op == 'incr' then
  local by = ARGV[7]
  if not current then
    local limit = check_limits(key, false, {}, {field, by})
    if limit ~= 0 then
      return {limit, '0'}
    end
  end
  -- HINCRBY is atomic: concurrent increments never lose an update. A value
  -- that is not an integer, or an overflow, fails here before any write.
  local added = redis.pcall('HINCRBY', key, field, by)
  if type(added) == 'table' and added.err then
    -- Only the value's own faults are bad data in this session. Anything
    -- else (an ACL that denies HINCRBY, say) goes back as the error it is,
    -- never disguised as a field to start over from.
    if string.find(added.err, 'not an integer', 1, true)
        or string.find(added.err, 'overflow', 1, true) then
      return {-4, '0'}
    end
    return redis.error_reply(added.err)
  end
  -- A Lua number holds 53 bits of the 64: past that, read the text back.
  local text
  if added > -9007199254740992 and added < 9007199254740992 then
    text = int(added)
  else
    text = redis.call('HGET', key, field)
  end
  -- A longer number (9 -> 10) can take the session past max_bytes. Rare,
  -- so only then is the session counted; the script is atomic, so putting
  -- the old text back means no client ever saw the new one.
  if current and #text > #current then
    local limit = check_limits(key, false, {}, {field, text})
    if limit ~= 0 then
      redis.call('HSET', key, field, current)
      return {limit, '0'}
    end
  end
  apply(key, false, {}, {}, created)
  return {1, text}
elseif op == 'cas' then
  local expected = false
  if ARGV[7] == '1' then
    expected = ARGV[8]
  end
  if current ~= expected then
    return {1, '0'}
  end
  if ARGV[9] == '1' then
    local limit = check_limits(key, false, {}, {field, ARGV[10]})
    if limit ~= 0 then
      return {limit, '0'}
    end
    apply(key, false, {}, {field, ARGV[10]}, created)
  else
    apply(key, false, {field}, {}, created)
  end
  return {1, '1'}
end
return redis.error_reply('SESSION_WRITE: unknown op ' .. tostring(op))
