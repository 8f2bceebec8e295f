-- Helpers of the ops that take a whole change (update, renew): joined after
-- prelude.lua for those ops only.

-- HDEL of any number of fields, in slices: Lua's unpack fails past about
-- 8,000 values, and a failure after the first slice would leave the change
-- half applied.
local function hdel_all(k, fields)
  for first = 1, #fields, 1000 do
    redis.call('HDEL', k, unpack(fields, first, math.min(first + 999, #fields)))
  end
end

-- Deletes what a change deletes (every user field first if `clear`).
local function delete_fields(k, clear, removals)
  if clear then
    local doomed = {}
    for _, field in ipairs(redis.call('HKEYS', k)) do
      if string.sub(field, 1, 2) ~= '__' then
        doomed[#doomed + 1] = field
      end
    end
    hdel_all(k, doomed)
  end
  hdel_all(k, removals)
end

-- The change in ARGV[2..]: "1" to clear every user field first, n, n
-- field names to delete, then field, value, field, value, ... to set.
-- Returns check_limits' verdict on applying it to k (0: within the
-- limits), then clear, removals and upserts.
local function checked_change(k)
  local clear = ARGV[2] == '1'
  local n = tonumber(ARGV[3])
  local removals, upserts = {}, {}
  for i = 1, n do
    removals[i] = ARGV[3 + i]
  end
  for i = 4 + n, #ARGV do
    upserts[#upserts + 1] = ARGV[i]
  end
  return check_limits(k, clear, removals, upserts), clear, removals, upserts
end
