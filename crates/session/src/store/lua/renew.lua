-- renew: fixation defence. The data moves to a fresh id and the old id
-- dies, in one step, with the change applied and the TTL slid.
-- KEYS[2]  the new key, in the SAME hash slot as KEYS[1] (the caller draws
--          the new id so; see session::slot): Redis Cluster refuses a
--          script whose keys span slots, and this one never does.
-- ARGV[2..]  the change: see checked_change. A __created among its fields
--          (a sign-in's) restarts the absolute lifetime from that time.
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
-- A sign-in sends __created: the absolute lifetime starts anew from it
-- (it counts from authentication). A plain renewal keeps the session's.
for i = 1, #upserts, 2 do
  if upserts[i] == '__created' then
    created, stamp = tonumber(upserts[i + 1]) or created, false
  end
end
redis.call('RENAME', key, new_key)
delete_fields(new_key, clear, removals)
set_fields(new_key, upserts, true, created, stamp, now, now_text)
return 1
