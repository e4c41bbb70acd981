-- wrk script: mixed workload, 70% GET by id / 15% list / 10% create / 5% update
local c = dofile((os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/common.lua")
local get, list, create, update = c.get_by_id, c.list, c.create, c.update
c.workload(function()
  local r = math.random(100)
  if r <= 70 then return get()
  elseif r <= 85 then return list()
  elseif r <= 95 then return create()
  else return update() end
end)
