-- incr: adds to an integer field, atomically (HINCRBY: concurrent
-- increments never lose an update).
-- ARGV[2]  the field; ARGV[3]  the increment (a signed 64-bit integer)
-- Replies  the new value: an integer, or its text past 2^53;
--          {0} no live session; {-2} / {-3} over max_fields / max_bytes;
--          {-4} the field is not an integer, or the sum overflows.
--          Anything but a value: nothing was written.
local field = ARGV[2]
local created, seen, current, stamp = live(key, field, now)
if not created then
  return {0}
end
if not current then
  local limit = check_limits(key, false, {}, {field, ARGV[3]})
  if limit ~= 0 then
    return {limit}
  end
end
-- A value that is not an integer, or an overflow, fails here before any
-- write.
local added = redis.pcall('HINCRBY', key, field, ARGV[3])
if type(added) == 'table' then
  -- Only the value's own faults are bad data in this session. Anything
  -- else (an ACL that denies HINCRBY, say) goes back as the error it is,
  -- never disguised as a field to start over from.
  if string.find(added.err, 'not an integer', 1, true)
      or string.find(added.err, 'overflow', 1, true) then
    return {-4}
  end
  return redis.error_reply(added.err)
end
-- A Lua number holds 53 bits of the 64: past that, read the text back.
local reply = added
if added <= -9007199254740992 or added >= 9007199254740992 then
  reply = redis.call('HGET', key, field)
end
-- A longer number (9 -> 10) can take the session past max_bytes. Only
-- then is the session counted; the script is atomic, so putting the old
-- text back means no client ever saw the new one.
-- (Tested without formatting the number: the common case costs a compare.)
local longer
if type(reply) == 'string' then
  longer = current and #reply > #current
elseif current then
  if added >= 0 then
    longer = added >= 10 ^ #current
  else
    longer = -added >= 10 ^ (#current - 1)
  end
end
if longer then
  local text = reply
  if type(text) ~= 'string' then
    text = string.format('%d', added)
  end
  local limit = check_limits(key, false, {}, {field, text})
  if limit ~= 0 then
    redis.call('HSET', key, field, current)
    return {limit}
  end
end
if due(seen, stamp, now) then
  set_fields(key, nil, true, created, stamp, now, now_text)
end
return reply
