-- wrk script: GET /tasks/{id} as a browser sends it (Origin, Sec-Fetch-*, ...)
local c = dofile((os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/common.lua")
c.workload(c.browser)
