-- wrk script: one fixed path (env BENCH_PATH) with the first user's token.
-- Used by --scale to compare the first page and deep pages of one user's list.
local dir = os.getenv("BENCH_LUA_DIR") or "bench/lua"
local c = dofile(dir .. "/common.lua")
setup = c.setup
response = c.response
done = c.done
local path = os.getenv("BENCH_PATH") or "/api/v1/tasks"
local req
init = function(args)
  c.init(args)
  local u = c.user()
  for _ = 1, 1 do u = c.load()[1] end
  req = wrk.format("GET", path, u.auth)
end
request = function() return req end
