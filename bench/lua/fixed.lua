-- wrk script: one fixed path (env BENCH_PATH) with the first user's token.
-- Used by --scale to compare the first page and deep pages of one user's list.
local c = dofile((os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/common.lua")
local path = os.getenv("BENCH_PATH") or "/api/v1/tasks"
local req
c.workload(function() return req end)
init = function(args)
  c.init(args)
  req = wrk.format("GET", path, c.first_user().auth)
end
