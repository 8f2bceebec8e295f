-- update: changes the fields of a live session, or, with no change, only
-- slides its TTL (a touch: always refreshed, the caller found it due).
-- ARGV[2..]  the change: see checked_change
-- Replies 1 done; 0 no live session; -2 / -3 over max_fields /
--          max_bytes. Anything but 1: nothing was written.
local created, seen, _, stamp = live(key, nil, now)
if not created then
  return 0
end
local limit, clear, removals, upserts = checked_change(key)
if limit ~= 0 then
  return limit
end
local touch = not clear and #removals == 0 and #upserts == 0
delete_fields(key, clear, removals)
set_fields(key, upserts, touch or due(seen, stamp, now), created, stamp, now, now_text)
return 1
