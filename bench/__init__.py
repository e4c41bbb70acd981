"""Benchmark runner for the task service: one command, bounded, self-cleaning.

    .venv/bin/python bench/run.py [--quick] [--sweep] [--scale] [--soak 300]
                                  [--profile] [--prod] [--ceilings-only]

What one run does (see bench/README.md):
  1. checks that wrk is installed;
  2. (re)creates the bench database (default ``taskapi_bench``; never ``test``)
     and migrates it with ``alembic upgrade head`` (the service's migrations);
  3. starts, as subprocesses on free loopback ports, under the SAME server and
     flags (uvicorn, 1 worker, uvloop, the production command's httptools protocol
     ``taskapi.server:HttpToolsProtocol``, no access log):
       - the service      ``uvicorn main:app``
       - ceiling_static   bare ASGI, fixed JSON (the HTTP stack alone)
       - ceiling_query    bare ASGI, one asyncpg PK SELECT (one-query ceiling)
       - floor_mix        bare ASGI, the service's own statements for GET and
                          the mix without any of its features (after the service)
     and optionally the production command (``--prod``, 2 workers);
  4. seeds users and tasks THROUGH THE API with real HS256 tokens (PyJWT);
  5. drives wrk (bench/lua/*.lua, -t1 -c32 --latency) for GET by id, list,
     create, update and mix 70/15/10/5, and both ceilings with the same Lua
     client code, and prints req/s, p50, p99, errors and ratios to ceilings,
     and the service's GET and mix as a fraction of the floor's.
  Optional: --sweep (8/32/128/512 connections), --scale (10k vs 10M tasks,
  deep pagination), --soak N (RSS over time), --profile (py-spy).
All subprocesses are killed at exit; every wait and run is bounded.
"""
