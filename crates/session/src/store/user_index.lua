-- USER_INDEX: a user's index of signed-in sessions (see users.rs). Every
-- key is the user's, under one hash tag: one slot on Redis Cluster.
--
-- KEYS[1]  hash <user_index_prefix>{<tag>}: field "epoch", and
--          "s:<handle>" = the session id, for each entry
-- KEYS[2]  sorted set <user_index_prefix>{<tag>}:created: each handle,
--          scored by its session's creation time in ms (its absolute
--          deadline counts from there)
-- KEYS[3], KEYS[4]  optional (store.legacy_user_index): the same two keys
--          in the layout before this version, <key_prefix>user:{<tag>},
--          under the session prefix, where a Nest node can be made to write
--          them. Used only while they hold a hash and a sorted set (a Nest
--          node's counter makes them something else: then they are left
--          alone), checked before anything is written. Read, pruned and
--          emptied, never created: rejoin, take, list, revoke and drop see
--          the entries written there before an upgrade; join writes only
--          KEYS[1..2].
--
-- An entry being ended is "x:<handle>" instead of "s:<handle>" (revoke,
-- take and a join past the cap mark it so, atomically with reading it): no
-- renewal can move it any more, and list and revoke still return it, so
-- that a failure between marking and ending leaves it revocable. Only drop
-- removes it, and drop removes nothing else: an entry a renewal may still
-- move is never dropped by a caller that read it earlier.
--
-- ARGV[1]  op: join | rejoin | take | list | revoke | drop
-- ARGV[2]  absolute lifetime, ms (entries created before now - this are
--          pruned); 0 = none
-- ARGV[3]  once the epoch was raised, how long the keys live at least, ms:
--          longer than a sign-in ticket, so that the epoch outlives any
--          sign-in in flight
-- join:   ARGV[4] the epoch read before the credentials were checked,
--         ARGV[5] handle, ARGV[6] session id, ARGV[7] created (ms),
--         ARGV[8] the most entries a user may have
--         -> {'0'} if the epoch moved (nothing written), else {'1',
--            handle, id, created, ...}: the oldest entries past the cap,
--            marked as being ended, for the caller to end and then drop
-- rejoin: ARGV[4] handle, ARGV[5] the session's new id, ARGV[6..] the
--         names its old id may have in the entry (hashed, and raw for an
--         entry written before session.hash_ids) -> {'1'} if the entry
--         still names the old id and is not being ended (it now names the
--         new one), else {'0'} and nothing is written: a renewal of a
--         session that was revoked, logged out or signed out everywhere
--         while it ran must not stand. (No epoch: every revocation marks
--         the entries it ends, and the one it spares may renew.)
-- take:   ARGV[4] handle -> {handle, id, created} of that entry, marked as
--         being ended (the caller ends the session, then drops it), or {}
-- list:   -> {handle, id, created, ...}, newest first (legacy entries
--         after), those being ended included
-- revoke: ARGV[4] a handle to spare, or "" -> raises the epoch, then
--         {handle, id, created, ...} of every other entry, each marked as
--         being ended (left in place: the caller ends the sessions, then
--         drops the entries)
-- drop:   ARGV[4..] handles -> removes their entries that are being
--         ended; an entry not so marked stays
--
-- Memory: the text loaded for rejoin, take, revoke and drop starts with
-- `#!lua flags=allow-oom` (see redis_users.rs): at maxmemory under
-- noeviction a revocation must still run. They write little (an HINCRBY,
-- a mark, a PEXPIRE) and delete entries. join and list run unflagged: a
-- full Redis refuses a new sign-in's index entry.

local index, created = KEYS[1], KEYS[2]
local legacy_index, legacy_created = KEYS[3], KEYS[4]
local op = ARGV[1]
local absolute_ms = tonumber(ARGV[2])
local keep_ms = tonumber(ARGV[3])

-- Before any write: the legacy keys are used only while they are what an
-- older version wrote (anything else, such as a Nest node's counter
-- planted through a cookie, would fail each command with WRONGTYPE).
if legacy_index then
  local it = redis.call('TYPE', legacy_index)['ok']
  local ct = redis.call('TYPE', legacy_created)['ok']
  if it ~= 'hash' or (ct ~= 'zset' and ct ~= 'none') then
    legacy_index, legacy_created = nil, nil
  end
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local function int(n)
  return string.format('%d', n)
end

-- HDEL / ZREM of any number of entries from the index ix / cr, both forms,
-- in slices: Lua's unpack fails past about 8,000 values.
local function remove(ix, cr, handles)
  for first = 1, #handles, 500 do
    local last = math.min(first + 499, #handles)
    local fields = {}
    for i = first, last do
      fields[#fields + 1] = 's:' .. handles[i]
      fields[#fields + 1] = 'x:' .. handles[i]
    end
    redis.call('HDEL', ix, unpack(fields))
    redis.call('ZREM', cr, unpack(handles, first, last))
  end
end

-- Entries past their absolute deadline go, whenever the index is touched.
local function prune(ix, cr)
  if absolute_ms <= 0 then
    return
  end
  remove(ix, cr, redis.call('ZRANGE', cr, '-inf', '(' .. int(now - absolute_ms), 'BYSCORE'))
end

-- Both keys live until the newest entry's deadline; once the epoch was
-- raised, at least keep_ms more, so that a sign-in still in flight (tickets
-- live less long) cannot find the epoch gone and back at 0.
local function expire()
  local ttl = 0
  if redis.call('HEXISTS', index, 'epoch') == 1 then
    ttl = keep_ms
  end
  local newest = redis.call('ZRANGE', created, 0, 0, 'REV', 'WITHSCORES')
  if #newest == 2 then
    if absolute_ms > 0 then
      ttl = math.max(ttl, tonumber(newest[2]) + absolute_ms - now)
    else
      ttl = math.max(ttl, keep_ms)
    end
  end
  -- At least 1 ms: an entry joined at its very deadline must not leave
  -- keys without a TTL.
  ttl = math.max(ttl, 1)
  if redis.call('EXISTS', index) == 1 then
    redis.call('PEXPIRE', index, int(ttl))
    if redis.call('EXISTS', created) == 1 then
      redis.call('PEXPIRE', created, int(ttl))
    end
  end
end

-- Marks the entry `handle` of ix as being ended; its session id, or nil.
local function doom(ix, handle)
  local id = redis.call('HGET', ix, 's:' .. handle)
  if id then
    redis.call('HDEL', ix, 's:' .. handle)
    redis.call('HSET', ix, 'x:' .. handle, id)
    return id
  end
  return redis.call('HGET', ix, 'x:' .. handle)
end

-- {handle, id, created, ...} of the entries of ix in a ZRANGE ...
-- WITHSCORES reply, but `spare`'s, appended to `out` (nil: a new list);
-- entries being ended included. With `dooming`, each is marked so.
local function entries(ix, handles_with_scores, spare, out, dooming)
  out = out or {}
  for i = 1, #handles_with_scores, 2 do
    local handle = handles_with_scores[i]
    if handle ~= spare then
      local id
      if dooming then
        id = doom(ix, handle)
      else
        id = redis.call('HGET', ix, 's:' .. handle) or redis.call('HGET', ix, 'x:' .. handle)
      end
      if id then
        out[#out + 1] = handle
        out[#out + 1] = id
        out[#out + 1] = handles_with_scores[i + 1]
      end
    end
  end
  return out
end

if op == 'join' then
  local epoch = redis.call('HGET', index, 'epoch') or '0'
  if epoch ~= ARGV[4] then
    return {'0'}
  end
  prune(index, created)
  local handle = ARGV[5]
  redis.call('HSET', index, 's:' .. handle, ARGV[6])
  redis.call('ZADD', created, ARGV[7], handle)
  local over = redis.call('ZCARD', created) - tonumber(ARGV[8])
  local reply = {'1'}
  if over > 0 then
    -- The oldest others: never the session signing in, however old it is.
    -- Marked now, so that no renewal moves one before the caller ends it.
    local oldest = entries(index, redis.call('ZRANGE', created, 0, over, 'WITHSCORES'), handle, nil, true)
    for i = 1, math.min(#oldest, over * 3) do
      reply[#reply + 1] = oldest[i]
    end
  end
  expire()
  return reply
elseif op == 'rejoin' then
  local field = 's:' .. ARGV[4]
  -- The entry is in the new layout, or (signed in before an upgrade) in
  -- the legacy one: it is moved where it is.
  for _, ix in ipairs({index, legacy_index}) do
    local current = redis.call('HGET', ix, field)
    if current then
      for i = 6, #ARGV do
        if current == ARGV[i] then
          redis.call('HSET', ix, field, ARGV[5])
          return {'1'}
        end
      end
      return {'0'}
    end
  end
  return {'0'}
elseif op == 'take' then
  local handle = ARGV[4]
  for _, pair in ipairs({{index, created}, {legacy_index, legacy_created}}) do
    local ix, cr = pair[1], pair[2]
    if ix then
      local id = doom(ix, handle)
      if id then
        return {handle, id, redis.call('ZSCORE', cr, handle) or '0'}
      end
    end
  end
  return {}
elseif op == 'list' then
  prune(index, created)
  local out = entries(index, redis.call('ZRANGE', created, 0, -1, 'REV', 'WITHSCORES'), nil)
  if legacy_index then
    prune(legacy_index, legacy_created)
    entries(legacy_index, redis.call('ZRANGE', legacy_created, 0, -1, 'REV', 'WITHSCORES'), nil, out)
  end
  return out
elseif op == 'revoke' then
  redis.call('HINCRBY', index, 'epoch', 1)
  prune(index, created)
  local spare = ARGV[4]
  if spare == '' then
    spare = nil
  end
  local doomed = entries(index, redis.call('ZRANGE', created, 0, -1, 'REV', 'WITHSCORES'), spare, nil, true)
  if legacy_index then
    -- Raised only where the index exists: it stops a sign-in in flight on
    -- a node not yet upgraded from joining there.
    redis.call('HINCRBY', legacy_index, 'epoch', 1)
    prune(legacy_index, legacy_created)
    entries(legacy_index, redis.call('ZRANGE', legacy_created, 0, -1, 'REV', 'WITHSCORES'), spare, doomed, true)
  end
  expire()
  return doomed
elseif op == 'drop' then
  -- Only entries being ended: one a renewal still holds under `s:` stays.
  for _, pair in ipairs({{index, created}, {legacy_index, legacy_created}}) do
    local ix, cr = pair[1], pair[2]
    if ix then
      local handles = {}
      for i = 4, #ARGV do
        if redis.call('HEXISTS', ix, 's:' .. ARGV[i]) == 0 then
          handles[#handles + 1] = ARGV[i]
        end
      end
      remove(ix, cr, handles)
    end
  end
  return {1}
end
return redis.error_reply('USER_INDEX: unknown op ' .. tostring(op))
