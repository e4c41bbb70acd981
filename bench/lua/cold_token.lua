-- wrk script: GET /tasks/{id} of a known user with a token the service has not seen
local c = dofile((os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/common.lua")
c.workload(c.cold_token)
