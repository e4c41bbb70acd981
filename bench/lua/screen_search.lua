-- wrk script: the "search" screen of a task app, one request (see common.lua, README "Screens")
local c = dofile((os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/common.lua")
c.workload(c.screen_search)
