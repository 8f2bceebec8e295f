-- renew: fixation defence. The data moves to a fresh id and the old id
-- dies, in one step, with the change applied and the TTL slid.
-- KEYS[2]  the new key, in the SAME hash slot as KEYS[1] (the caller draws
--          the new id so; see session::slot): Redis Cluster refuses a
--          script whose keys span slots, and this one never does.
-- ARGV[2..]  the change: see checked_change
-- Replies 1 done; 0 no live session; -1 the new id is taken; -2 / -3 over
--          max_fields / max_bytes. Anything but 1: nothing was written.
local created, _, _, stamp = live(key, nil, now)
if not created then
  return 0
end
local new_key = KEYS[2]
if redis.call('EXISTS', new_key) == 1 then
  return -1
end
local limit, clear, removals, upserts = checked_change(key)
if limit ~= 0 then
  return limit
end
redis.call('RENAME', key, new_key)
delete_fields(new_key, clear, removals)
set_fields(new_key, upserts, true, created, stamp, now, now_text)
return 1
