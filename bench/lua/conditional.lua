-- wrk script: GET /tasks/{id} with If-None-Match: the current ETag (304)
local c = dofile((os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/common.lua")
c.workload(c.conditional)
