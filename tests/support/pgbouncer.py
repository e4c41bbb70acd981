"""A private PgBouncer (transaction pooling) for tests.

Usage::

    from tests.support.pgbouncer import PgBouncer, require_pgbouncer

    require_pgbouncer()                        # skip if missing (CI=true: a failure)
    with PgBouncer(upstream_port=5432) as bouncer:          # shared cluster
        url = bouncer.url("postgresql+asyncpg", dbname="test")

    with PrivateCluster() as pg, PgBouncer.for_cluster(pg) as bouncer:
        ...

The ``[databases]`` section maps ``*`` to the upstream host/port, so every
database name (including ones created later by tests) is reachable through
the bouncer; connecting as user U logs in to PostgreSQL as U.

pgbouncer refuses to run as root, so when we are root it runs as the
``postgres`` OS user (like PrivateCluster).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from .pgcluster import _RunAs, free_port

__all__ = ["PgBouncer", "PgBouncerError", "find_pgbouncer", "require_pgbouncer"]

INSTALL_HINT = (
    "pgbouncer binary not found; install it with `apt-get install pgbouncer` (or set PGBOUNCER_BIN)"
)


class PgBouncerError(RuntimeError):
    pass


def find_pgbouncer() -> Path | None:
    env = os.environ.get("PGBOUNCER_BIN")
    if env and os.access(env, os.X_OK):
        return Path(env)
    found = shutil.which("pgbouncer")
    if found:
        return Path(found)
    for c in (
        "/usr/sbin/pgbouncer",
        "/usr/local/sbin/pgbouncer",
        "/usr/local/bin/pgbouncer",
        "/opt/homebrew/bin/pgbouncer",
    ):
        if os.access(c, os.X_OK):
            return Path(c)
    return None


def require_pgbouncer() -> Path:
    """Path of the pgbouncer binary, or skip the test (a failure when CI=true)."""
    p = find_pgbouncer()
    if p is None:
        pytest.skip(INSTALL_HINT)
        raise AssertionError("unreachable")  # pragma: no cover
    return p


def _q(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


class PgBouncer:
    """pgbouncer in ``pool_mode = transaction`` on a free loopback port.

    Parameters
    ----------
    upstream_host / upstream_port:
        PostgreSQL to forward to (e.g. 127.0.0.1:5432 or a PrivateCluster).
    dbname:
        Optional: also map this exact name explicitly (``*`` forwards all names).
    users:
        ``{user: password}`` written to the auth_file.  With ``auth_type=trust``
        (default) clients are not authenticated, but pgbouncer uses the password
        from this file to log in to a PostgreSQL that asks for one (scram/md5).
        Users not listed are still accepted (``auth_user``-less trust requires
        the user in auth_file, so ``postgres`` is always added).
    pool_mode:
        ``transaction`` (default; what Neon's pooled endpoint uses), or
        ``session`` / ``statement``.
    default_pool_size:
        Server connections per (db, user) pair.
    settings:
        Extra ``[pgbouncer]`` settings (override the defaults below).
    tls:
        Generate a self-signed certificate and accept TLS from clients
        (``client_tls_sslmode = allow``), so ``ssl=require`` URLs work through
        the bouncer as with Neon's pooled endpoint.
    server_tls_sslmode:
        TLS from pgbouncer to PostgreSQL (default ``prefer``).
    """

    host = "127.0.0.1"

    DEFAULTS: dict[str, object] = {
        "pool_mode": "transaction",
        "auth_type": "trust",
        "max_client_conn": 2000,
        "default_pool_size": 20,
        "min_pool_size": 0,
        "reserve_pool_size": 5,
        "reserve_pool_timeout": 1,
        "max_db_connections": 0,
        # JDBC/psql-style clients send these; asyncpg only sends client_encoding
        # (+ server_settings).  Anything else (e.g. statement_timeout in asyncpg
        # server_settings) is rejected: "unsupported startup parameter".
        "ignore_startup_parameters": "extra_float_digits,options",
        # fail fast and recover fast when PostgreSQL restarts
        "server_login_retry": 1,
        "server_connect_timeout": 5,
        "query_wait_timeout": 30,
        "server_check_delay": 0,
        "server_check_query": "select 1",
        "server_lifetime": 3600,
        "server_idle_timeout": 60,
        "server_reset_query": "DISCARD ALL",
        "server_reset_query_always": 0,
        "server_round_robin": 0,
        "log_connections": 0,
        "log_disconnections": 0,
        "log_pooler_errors": 1,
        "stats_period": 60,
        "verbose": 0,
    }

    def __init__(
        self,
        upstream_host: str = "127.0.0.1",
        upstream_port: int = 5432,
        *,
        dbname: str | None = None,
        users: Mapping[str, str] | None = None,
        pool_mode: str = "transaction",
        default_pool_size: int = 20,
        max_client_conn: int = 2000,
        auth_type: str = "trust",
        settings: Mapping[str, object] | None = None,
        port: int | None = None,
        os_user: str | None = None,
        binary: Path | str | None = None,
        start_timeout: float = 15.0,
        tls: bool = False,
        server_tls_sslmode: str = "prefer",
    ):
        b = Path(binary) if binary else find_pgbouncer()
        if b is None:
            raise PgBouncerError(INSTALL_HINT)
        self.binary = b
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.dbname = dbname
        self.users = {"postgres": "", **(users or {})}
        self.admin_user = "postgres"
        self.port = port or free_port()
        self._fixed_port = port is not None
        self.start_timeout = start_timeout
        self.config: dict[str, object] = dict(self.DEFAULTS)
        self.config.update(
            pool_mode=pool_mode,
            default_pool_size=default_pool_size,
            max_client_conn=max_client_conn,
            auth_type=auth_type,
        )
        self.config.update(settings or {})
        self._runas = _RunAs(os_user)
        self.base_dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self._runas.chown(self.base_dir)
        self.ini_path = self.base_dir / "pgbouncer.ini"
        self.userlist_path = self.base_dir / "userlist.txt"
        self.logfile = self.base_dir / "pgbouncer.log"
        self._proc: subprocess.Popen | None = None
        self._cleaned = False
        self.tls = tls
        self.tls_cert_path: Path | None = None
        # TLS to the upstream server: prefer = use it if PostgreSQL has ssl=on
        self.config.setdefault("server_tls_sslmode", server_tls_sslmode)
        if tls:  # clients may (not must) use TLS: sslmode=require works
            from .pgcluster import generate_self_signed_cert

            self.tls_cert_path = self.base_dir / "client.crt"
            key = self.base_dir / "client.key"
            generate_self_signed_cert(self.tls_cert_path, key)
            for f in (self.tls_cert_path, key):
                self._runas.chown(f)
            self.config.setdefault("client_tls_sslmode", "allow")
            self.config.setdefault("client_tls_cert_file", str(self.tls_cert_path))
            self.config.setdefault("client_tls_key_file", str(key))

    @classmethod
    def for_cluster(cls, cluster, **kw) -> PgBouncer:
        """A bouncer in front of a PrivateCluster (password_user included)."""
        users = dict(kw.pop("users", {}) or {})
        if getattr(cluster, "password_user", None):
            users.setdefault(*cluster.password_user)
        users.setdefault(cluster.superuser, "")
        return cls(cluster.host, cluster.port, users=users, **kw)

    # ---------------- config ----------------

    def _write_config(self) -> None:
        dbs = []
        if self.dbname:
            dbs.append(
                f"{self.dbname} = host={self.upstream_host} port={self.upstream_port}"
                f" dbname={self.dbname}"
            )
        dbs.append(f"* = host={self.upstream_host} port={self.upstream_port}")
        cfg = dict(self.config)
        cfg.update(
            listen_addr=self.host,
            listen_port=self.port,
            unix_socket_dir=str(self.base_dir),
            auth_file=str(self.userlist_path),
            pidfile=str(self.base_dir / "pgbouncer.pid"),
            admin_users=self.admin_user,
            stats_users=self.admin_user,
        )
        lines = ["[databases]", *dbs, "", "[pgbouncer]"]
        lines += [f"{k} = {v}" for k, v in cfg.items()]
        self.ini_path.write_text("\n".join(lines) + "\n")
        self.userlist_path.write_text("".join(f"{_q(u)} {_q(p)}\n" for u, p in self.users.items()))
        os.chmod(self.userlist_path, 0o600)
        for p in (self.ini_path, self.userlist_path):
            self._runas.chown(p)

    # ---------------- lifecycle ----------------

    def start(self) -> PgBouncer:
        if self.is_running:
            return self
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            self._write_config()
            with open(self.logfile, "ab") as log:
                self._proc = subprocess.Popen(
                    [str(self.binary), str(self.ini_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    **self._runas.popen_kwargs(),
                )
            _LIVE.add(self)
            try:
                self.wait_ready()
                return self
            except PgBouncerError:
                if (
                    attempt + 1 < attempts
                    and not self.is_running
                    and "in use" in self.log_tail().lower()
                ):
                    self.port = free_port()
                    continue
                self.stop()
                raise
        return self  # pragma: no cover

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll until pgbouncer accepts a TCP connection and answers a startup packet."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while True:
            if not self.is_running:
                raise PgBouncerError(
                    f"pgbouncer exited ({self._proc.returncode})\n--- log ---\n{self.log_tail()}"
                )
            if self._answers_startup():
                return
            if time.monotonic() > deadline:
                raise PgBouncerError(f"pgbouncer not ready\n--- log ---\n{self.log_tail()}")
            time.sleep(0.02)  # polling interval

    def _answers_startup(self) -> bool:
        """Send an SSLRequest and expect 'N' (pgbouncer answers it itself)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
                return s.recv(1) in (b"N", b"S")
        except OSError:
            return False

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.is_running else None

    def stop(self, *, timeout: float = 10) -> None:
        """Immediate shutdown (SIGTERM); SIGKILL if it does not exit in time."""
        if not self.is_running:
            return
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)

    def reload(self) -> None:
        """Rewrite the config and SIGHUP (e.g. after changing ``config``)."""
        self._write_config()
        if self.is_running:
            self._proc.send_signal(signal.SIGHUP)

    def cleanup(self) -> None:
        if self._cleaned:
            return
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        self._cleaned = True
        _LIVE.discard(self)

    def __enter__(self) -> PgBouncer:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # ---------------- connecting ----------------

    def url(
        self,
        driver: str = "postgresql",
        dbname: str | None = None,
        user: str = "postgres",
        password: str | None = None,
        **query: str,
    ) -> str:
        """e.g. ``url("postgresql+asyncpg", dbname="test", prepared_statement_cache_size="0")``."""
        dbname = dbname or self.dbname or "postgres"
        if password is None and self.users.get(user):
            password = self.users[user]
        auth = quote(user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        u = f"{driver}://{auth}@{self.host}:{self.port}/{quote(dbname, safe='')}"
        if query:
            u += "?" + urlencode(query)
        return u

    def admin(self, command: str) -> list[dict[str, str]]:
        """Run an admin console command (``SHOW POOLS``...) with psql; rows as dicts."""
        import csv
        import io

        from .pgcluster import find_pg_bindir

        bindir = find_pg_bindir()
        psql = str(bindir / "psql") if bindir else shutil.which("psql")
        if not psql:
            raise PgBouncerError("psql not found")
        cp = subprocess.run(
            [
                psql,
                "-X",
                "--csv",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.admin_user,
                "-d",
                "pgbouncer",
                "-c",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "5"},
        )
        if cp.returncode != 0:
            raise PgBouncerError(f"psql admin {command!r} failed: {cp.stderr.strip()}")
        return list(csv.DictReader(io.StringIO(cp.stdout)))

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __repr__(self) -> str:
        return (
            f"<PgBouncer {self.host}:{self.port} -> {self.upstream_host}:{self.upstream_port} "
            f"{self.config['pool_mode']} {'running' if self.is_running else 'stopped'}>"
        )


_LIVE: weakref.WeakSet[PgBouncer] = weakref.WeakSet()


@atexit.register
def _cleanup_live() -> None:
    for b in list(_LIVE):
        with contextlib.suppress(Exception):
            b.cleanup()
