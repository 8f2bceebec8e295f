-- The session scripts: one per op, each this prelude, then the op's own
-- file (`store/scripts.rs` joins them; create and adopt need none of it). So every
-- guard is written once, and a call runs only its own op: Redis charges
-- for every argument, every number parsed and every function defined, so a
-- script that carried every op cost a third more per call (benches/results/).
--
-- IDLE_MS (the sliding TTL), ABSOLUTE_MS (the lifetime from creation; 0 =
-- none), TOUCH_MS (the TTL is slid again only once it has run down by this
-- much; 0 = on every write), MAX_FIELDS and MAX_BYTES (of user fields) are
-- the deployment's policy: `scripts.rs` writes their values into the text
-- in place of these names, so they are neither arguments to parse nor
-- upvalues for each helper to capture. (Defining a helper that captures
-- upvalues costs Redis about a microsecond per call.) For the same reason
-- the helpers take what they need as parameters.
--
-- KEYS[1]  the session's hash, e.g. sid_<id>
-- ARGV[1]  now, in ms since the Unix epoch, by the APP NODE's clock. Nodes
--          run NTP; a skew of s between nodes moves an absolute deadline
--          and a TTL refresh by at most s, and Redis's own TTL still ends
--          every session. (A __seen more than TOUCH_MS ahead of this clock
--          counts as due, so a node far ahead cannot stop others sliding
--          the TTL.)
-- ARGV[2..] the op's own: see its file.
--
-- Fields named "__..." are the session's own metadata, never user data:
--   __created  creation time, ms since the epoch (anchors the absolute lifetime)
--   __seen     time of the last TTL refresh, ms since the epoch
--
-- No op ever re-creates a session that is gone: that is how a logout
-- always wins. Every check runs before the first write: Redis does not roll
-- back a script that fails halfway, so a write that can fail fails first.

local key = KEYS[1]
local now_text = ARGV[1]
local now = tonumber(now_text)

-- A field is metadata when its name starts with "__":
-- string.sub(field, 1, 2) == '__', written out where it is needed.

-- The live session at k: its creation time, its __seen, the value of
-- `field` if one is asked for (false if absent), and whether it needs its
-- stamp (a NestJS node wrote it: no __created); nil if there is none. A
-- session past its absolute lifetime is deleted here and then: its TTL
-- never reaches past that point when we wrote it last, but another writer
-- (a NestJS node) may have stretched it.
local function live(k, field, now)
  -- One call answers everything for every session we wrote: a key exists
  -- exactly when it has fields, and ours always have __created.
  local got
  if field then
    got = redis.call('HMGET', k, '__created', '__seen', field)
  else
    got = redis.call('HMGET', k, '__created', '__seen')
  end
  local created, stamp = tonumber(got[1]), false
  if not created then
    -- No stamp: no session, or one a NestJS node wrote. Its absolute
    -- lifetime starts now; set_fields() stamps it.
    if redis.call('EXISTS', k) == 0 then
      return nil
    end
    created, stamp = now, true
  end
  if ABSOLUTE_MS > 0 and created + ABSOLUTE_MS <= now then
    redis.call('DEL', k)
    return nil
  end
  return created, got[2], got[3], stamp
end

-- 0 if the session at k (nil: a new one) would stay within the limits after
-- the change, else -2 (fields) or -3 (bytes). Only sets can grow a session,
-- so a change that sets nothing skips the count.
local function check_limits(k, clear, removals, upserts)
  if #upserts == 0 then
    return 0
  end
  -- More names than the session may hold (a name sent twice counts twice:
  -- stricter, never looser). This also bounds the HSET below, whose
  -- arguments go through unpack. Metadata (a sign-in's __user, a sealed
  -- session's __salt) is not counted, but at most 16 of it rides along.
  local sent = 0
  for i = 1, #upserts, 2 do
    if string.sub(upserts[i], 1, 2) ~= '__' then
      sent = sent + 1
    end
  end
  if sent > MAX_FIELDS or #upserts / 2 > MAX_FIELDS + 16 then
    return -2
  end
  local fields = {}
  if k and not clear then
    local flat = redis.call('HGETALL', k)
    for i = 1, #flat, 2 do
      fields[flat[i]] = flat[i + 1]
    end
  end
  for _, field in ipairs(removals) do
    fields[field] = nil
  end
  for i = 1, #upserts, 2 do
    fields[upserts[i]] = upserts[i + 1]
  end
  local count, bytes = 0, 0
  for field, value in pairs(fields) do
    if string.sub(field, 1, 2) ~= '__' then
      count = count + 1
      bytes = bytes + #field + #value
    end
  end
  if count > MAX_FIELDS then
    return -2
  end
  if bytes > MAX_BYTES then
    return -3
  end
  return 0
end

-- Whether a write slides the TTL and __seen: when the session needs its
-- stamp, when TOUCH_MS is 0, or when __seen (`seen`, as read) is TOUCH_MS
-- or more from now, either way. So a busy session is not refreshed on
-- every request: its idle timeout ends between IDLE_MS - TOUCH_MS and
-- IDLE_MS after its last request.
local function due(seen, stamp, now)
  if stamp or TOUCH_MS == 0 then
    return true
  end
  local last = tonumber(seen)
  return not last or now - last >= TOUCH_MS or last - now >= TOUCH_MS
end

-- Sets the flat field, value list `upserts` at k (nil: none), and, if
-- `refresh`, stamps __seen (and __created if `stamp`) and slides the TTL:
-- the idle timeout, cut short by the absolute lifetime. Nothing in it can
-- fail once the checks have passed.
local function set_fields(k, upserts, refresh, created, stamp, now, now_text)
  if not refresh then
    if upserts and #upserts > 0 then
      redis.call('HSET', k, unpack(upserts))
    end
    return
  end
  -- The metadata keeps the hash non-empty even when every user field is gone.
  upserts = upserts or {}
  if stamp then
    redis.call('HSET', k, '__created', now_text, '__seen', now_text, unpack(upserts))
  else
    redis.call('HSET', k, '__seen', now_text, unpack(upserts))
  end
  local ttl = IDLE_MS
  if ABSOLUTE_MS > 0 then
    ttl = math.min(IDLE_MS, created + ABSOLUTE_MS - now)
  end
  -- '%d' formats a C long: exact for these values, far cheaper than '%.0f'.
  redis.call('PEXPIRE', k, string.format('%d', ttl))
end
