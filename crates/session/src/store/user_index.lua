-- USER_INDEX: a user's index of signed-in sessions (see users.rs). Every
-- key is the user's, under one hash tag: one slot on Redis Cluster.
--
-- KEYS[1]  hash <prefix>user:{<tag>}: field "epoch", and "s:<handle>" = the
--          session id, for each entry
-- KEYS[2]  sorted set <prefix>user:{<tag>}:created: each handle, scored by
--          its session's creation time in ms (its absolute deadline counts
--          from there)
--
-- ARGV[1]  op: join | list | revoke | drop
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
--            for the caller to end and then drop (listed until then)
-- list:   -> {handle, id, created, ...}, newest first
-- revoke: ARGV[4] a handle to spare, or "" -> raises the epoch, then
--         {handle, id, created, ...} of every other entry (left in place:
--         the caller ends the sessions, then drops the entries)
-- drop:   ARGV[4..] handles -> removes their entries

local index, created = KEYS[1], KEYS[2]
local op = ARGV[1]
local absolute_ms = tonumber(ARGV[2])
local keep_ms = tonumber(ARGV[3])

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local function int(n)
  return string.format('%d', n)
end

-- HDEL / ZREM of any number of entries, in slices: Lua's unpack fails past
-- about 8,000 values.
local function remove(handles)
  for first = 1, #handles, 500 do
    local last = math.min(first + 499, #handles)
    local fields = {}
    for i = first, last do
      fields[#fields + 1] = 's:' .. handles[i]
    end
    redis.call('HDEL', index, unpack(fields))
    redis.call('ZREM', created, unpack(handles, first, last))
  end
end

-- Entries past their absolute deadline go, whenever the index is touched.
local function prune()
  if absolute_ms <= 0 then
    return
  end
  remove(redis.call('ZRANGE', created, '-inf', '(' .. int(now - absolute_ms), 'BYSCORE'))
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

-- {handle, id, created, ...} of the entries in a ZRANGE ... WITHSCORES
-- reply, but `spare`'s.
local function entries(handles_with_scores, spare)
  local out = {}
  for i = 1, #handles_with_scores, 2 do
    local handle = handles_with_scores[i]
    if handle ~= spare then
      local id = redis.call('HGET', index, 's:' .. handle)
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
  prune()
  local handle = ARGV[5]
  redis.call('HSET', index, 's:' .. handle, ARGV[6])
  redis.call('ZADD', created, ARGV[7], handle)
  local over = redis.call('ZCARD', created) - tonumber(ARGV[8])
  local reply = {'1'}
  if over > 0 then
    -- The oldest others: never the session signing in, however old it is.
    local oldest = entries(redis.call('ZRANGE', created, 0, over, 'WITHSCORES'), handle)
    for i = 1, math.min(#oldest, over * 3) do
      reply[#reply + 1] = oldest[i]
    end
  end
  expire()
  return reply
elseif op == 'list' then
  prune()
  return entries(redis.call('ZRANGE', created, 0, -1, 'REV', 'WITHSCORES'), nil)
elseif op == 'revoke' then
  redis.call('HINCRBY', index, 'epoch', 1)
  prune()
  local spare = ARGV[4]
  if spare == '' then
    spare = nil
  end
  local doomed = entries(redis.call('ZRANGE', created, 0, -1, 'REV', 'WITHSCORES'), spare)
  expire()
  return doomed
elseif op == 'drop' then
  local handles = {}
  for i = 4, #ARGV do
    handles[#handles + 1] = ARGV[i]
  end
  remove(handles)
  return {1}
end
return redis.error_reply('USER_INDEX: unknown op ' .. tostring(op))
