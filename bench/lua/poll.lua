-- wrk script: polling client of the change feed: GET /changes?since=<its token>
local c = dofile((os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/common.lua")
c.workload(c.poll)
