-- adopt: the hash_ids migration (never on a cluster, where the two keys
-- live in different slots). KEYS[1] is the hashed key, KEYS[2] the raw one
-- a node without hash_ids wrote. Moves it, keeping fields and TTL, if the
-- hashed key is free. Standalone, as create.lua.
-- Replies 1 the session is now under its hashed key (moved by this call or
-- by a concurrent one: the caller runs its operation again either way);
-- 0 it is under neither.
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then
  return 1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RENAME', KEYS[2], key)
  return 1
end
return 0
