-- create: a new session at KEYS[1], if the id is free.
-- ARGV[2..]  field, value, field, value, ...: every field it holds
-- Replies  1 created; -1 the id is taken; -2 / -3 over max_fields /
--          max_bytes. Anything but 1: nothing was written.
if redis.call('EXISTS', key) == 1 then
  return -1
end
-- A new session holds exactly the fields it is created with, so the limits
-- need no table. Metadata counts toward neither limit, as in check_limits.
local pairs_sent, count, bytes = (#ARGV - 1) / 2, 0, 0
for i = 2, #ARGV, 2 do
  if string.sub(ARGV[i], 1, 2) ~= '__' then
    count = count + 1
    bytes = bytes + #ARGV[i] + #ARGV[i + 1]
  end
end
if count > MAX_FIELDS or pairs_sent > MAX_FIELDS + 16 then
  return -2
end
if bytes > MAX_BYTES then
  return -3
end
local ttl = IDLE_MS
if ABSOLUTE_MS > 0 then
  ttl = math.min(IDLE_MS, ABSOLUTE_MS)
end
redis.call('HSET', key, '__created', now_text, '__seen', now_text, unpack(ARGV, 2))
redis.call('PEXPIRE', key, ttl)
return 1
