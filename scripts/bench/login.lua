-- wrk script: POST /login as a new user on every request (no cookie), so
-- each one is a whole sign-in write: no user reaches the per-user cap.
--   wrk ... -s scripts/bench/login.lua http://127.0.0.1:8080/login
-- `thread_tag` is a global: setup() sets it in each thread's own state.
local counter = 0

function setup(thread)
  thread:set("thread_tag", tostring(math.random(1, 1e9)))
end

function request()
  counter = counter + 1
  local body = '{"user":"bench-' .. thread_tag .. '-' .. counter .. '"}'
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end
