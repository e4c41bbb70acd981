-- wrk script: a new user's first request (GET /tasks): provisioning and the query
local c = dofile((os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/common.lua")
c.workload(c.new_user)
