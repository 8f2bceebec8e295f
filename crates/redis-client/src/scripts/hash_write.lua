-- HASH_WRITE: set several hash fields and the key's TTL in one atomic step,
-- guarded by whether the key exists.
--
-- KEYS[1]  the hash
-- ARGV[1]  "create": write only if the key is ABSENT (a new session; never
--          overwrite a session that owns this id)
--          "update": write only if the key is PRESENT (never re-create a
--          session that expired or was deleted by a logout meanwhile)
-- ARGV[2]  TTL in seconds
-- ARGV[3..] field, value, field, value, ...
--
-- Returns 1 if written, 0 if the guard refused.
local exists = redis.call('EXISTS', KEYS[1]) == 1
-- The guard and the write run in one script, so nothing can slip between them.
if (ARGV[1] == 'create') == exists then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
