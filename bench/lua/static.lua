-- wrk script: single fixed GET with no Lua response() hook (wrk's fastest
-- path), used only to check how much the Lua hooks cost the client itself.
local dir = os.getenv("BENCH_LUA_DIR") or "bench/lua"
local c = dofile(dir .. "/common.lua")
setup = c.setup
done = c.done
wrk.path = "/api/v1/tasks/1"
