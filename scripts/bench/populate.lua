-- Writes ARGV[2] sessions, numbered from ARGV[1], in the layout the app
-- writes (a count and the two metadata fields, a 30-minute TTL), server-side
-- so that a million take seconds, not minutes. Keys are sid_bench-<n>: they
-- never collide with real ids.
local first, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local time = redis.call('TIME')
local now = string.format('%.0f', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
for n = first, first + count - 1 do
  local key = 'sid_bench-' .. n
  redis.call('HSET', key, 'count', '1', '__created', now, '__seen', now)
  redis.call('PEXPIRE', key, 1800000)
end
return count
