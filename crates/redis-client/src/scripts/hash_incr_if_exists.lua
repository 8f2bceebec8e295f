-- HASH_INCR_IF_EXISTS: add to an integer field and refresh the TTL, only if the
-- hash exists. This is the whole of GET /count for an existing session.
--
-- KEYS[1]  the hash
-- ARGV[1]  the field
-- ARGV[2]  the increment (a signed 64-bit integer)
-- ARGV[3]  TTL in seconds
--
-- Returns the new value, or nil (false) if the hash does not exist.
--
-- EXISTS guard: HINCRBY alone would re-create an expired or logged-out session
-- holding only this field. The check and the write share one script, so no
-- delete can land between them.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
-- HINCRBY is atomic in Redis: concurrent requests never lose an increment. A
-- field that is not an integer, or an overflow, raises an error here, before
-- anything is written.
local value = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
-- Sliding expiry: every increment keeps the session alive for another TTL.
redis.call('EXPIRE', KEYS[1], ARGV[3])
return value
