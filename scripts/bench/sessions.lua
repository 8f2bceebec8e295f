-- wrk script: send each request with a session cookie from a file (one
-- "sid=<value>" per line), taking them in turn; with no file, no cookie.
--   wrk ... -s scripts/bench/sessions.lua URL -- cookies.txt
local cookies = {}
local next_index = 0

function init(args)
  if args[1] then
    for line in io.lines(args[1]) do
      cookies[#cookies + 1] = line
    end
  end
  -- Threads start at different places, so they do not march in step.
  next_index = math.random(1, math.max(#cookies, 1))
end

function request()
  if #cookies == 0 then
    return wrk.request()
  end
  next_index = next_index % #cookies + 1
  return wrk.format(nil, nil, { Cookie = cookies[next_index] })
end
