-- wrk script: single fixed GET with no Lua response() hook (wrk's fastest
-- path), used only to check how much the Lua hooks cost the client itself.
local c = dofile((os.getenv("BENCH_LUA_DIR") or "bench/lua") .. "/common.lua")
setup = c.setup
done = c.done
wrk.path = "/api/v1/tasks/1"
