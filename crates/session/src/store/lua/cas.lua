-- cas: sets (or deletes) a field only if it holds the expected value.
-- ARGV[2] the field; ARGV[3] "1" if a value is expected (else the field
-- must be absent); ARGV[4] that value; ARGV[5] "1" to set (else delete);
-- ARGV[6] the new value.
-- Replies 1 swapped; 2 not swapped (nothing written); 0 no live session;
--          -2 / -3 over max_fields / max_bytes (nothing written).
local field = ARGV[2]
local created, seen, current, stamp = live(key, field, now)
if not created then
  return 0
end
local expected = false
if ARGV[3] == '1' then
  expected = ARGV[4]
end
if current ~= expected then
  return 2
end
if ARGV[5] == '1' then
  local limit = check_limits(key, false, {}, {field, ARGV[6]})
  if limit ~= 0 then
    return limit
  end
  set_fields(key, {field, ARGV[6]}, due(seen, stamp, now), created, stamp, now, now_text)
else
  redis.call('HDEL', key, field)
  set_fields(key, nil, due(seen, stamp, now), created, stamp, now, now_text)
end
return 1
