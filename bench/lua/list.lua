-- wrk script: list workload (see common.lua for the data file format)
local dir = os.getenv("BENCH_LUA_DIR") or "bench/lua"
local c = dofile(dir .. "/common.lua")
setup = c.setup
init = c.init
response = c.response
done = c.done
request = c.list
