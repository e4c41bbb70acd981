-- wrk script: list workload (see common.lua for the data file format)
local c = dofile((os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/common.lua")
c.workload(c.list)
