-- create: a new session at KEYS[1], if the id is free. Standalone: it needs
-- none of the prelude's helpers, and Redis would charge for defining them.
-- The caller has checked the limits (a new session holds exactly the fields
-- it is sent, so no hash needs reading: store/limits.rs), which also bounds
-- the unpack below.
-- ARGV[1]  now, in ms since the Unix epoch, by the app node's clock
-- ARGV[2..]  field, value, field, value, ...: every field it holds
-- Replies  1 created; -1 the id is taken, and nothing was written.
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then
  return -1
end
redis.call('HSET', key, '__created', ARGV[1], '__seen', ARGV[1], unpack(ARGV, 2))
if ABSOLUTE_MS > 0 and ABSOLUTE_MS < IDLE_MS then
  redis.call('PEXPIRE', key, ABSOLUTE_MS)
else
  redis.call('PEXPIRE', key, IDLE_MS)
end
return 1
