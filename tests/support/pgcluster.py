"""Throwaway PostgreSQL clusters for fault-tolerance tests.

``PrivateCluster`` runs ``initdb`` from the local PostgreSQL binaries into a
temporary directory and starts a postmaster on a free loopback port.  Unlike
the shared cluster on 127.0.0.1:5432 it may be stopped, killed and restarted
by a test at will.

Usage::

    from tests.support.pgcluster import PrivateCluster, require_pg_bindir

    require_pg_bindir()                      # pytest.skip if absent (CI=true: a failure)
    with PrivateCluster(ssl=True, password_user=("app", "secret")) as pg:
        pg.create_database("taskapi")
        url = pg.url("postgresql+asyncpg", dbname="taskapi")
        ...
        pg.stop()            # fast shutdown (backends send FATAL 57P01)
        pg.start()           # waits until the server accepts connections
        pg.kill()            # SIGKILL the postmaster (crash; recovery on start)
        pg.crash()           # SIGKILL every process of the cluster at once
        pg.restart()

When the tests run as root, ``initdb``/``postgres`` refuse to run, so every
server-side command runs as the ``postgres`` OS user (or ``$PGCLUSTER_OS_USER``)
and the temporary directory is owned by that user.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import glob
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

__all__ = [
    "PrivateCluster",
    "PrivateClusterError",
    "find_pg_bindir",
    "free_port",
    "require_pg_bindir",
]

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install them "
    "with `apt-get install postgresql` (Debian/Ubuntu) or set PG_BINDIR to the "
    "directory that contains initdb"
)


class PrivateClusterError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# discovery helpers
# --------------------------------------------------------------------------


def _has_server_binaries(d: Path) -> bool:
    return all(
        (d / b).is_file() and os.access(d / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres")
    )


def _version_key(path: str) -> tuple[int, ...]:
    m = re.search(r"/(\d+(?:\.\d+)*)/bin/?$", path)
    return tuple(int(x) for x in m.group(1).split(".")) if m else (0,)


def find_pg_bindir() -> Path | None:
    """Directory holding initdb/pg_ctl/postgres, or None.

    Order: $PG_BINDIR, ``pg_config --bindir``, the newest
    /usr/lib/postgresql/*/bin (Debian) or /usr/pgsql-*/bin (RHEL), then PATH.
    """
    env = os.environ.get("PG_BINDIR")
    if env and _has_server_binaries(Path(env)):
        return Path(env)

    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out and _has_server_binaries(Path(out)):
                return Path(out)

    candidates = glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin")
    candidates += glob.glob("/usr/local/pgsql/bin") + glob.glob(
        "/opt/homebrew/opt/postgresql@*/bin"
    )
    for c in sorted(candidates, key=_version_key, reverse=True):
        if _has_server_binaries(Path(c)):
            return Path(c)

    initdb = shutil.which("initdb")
    if initdb and _has_server_binaries(Path(initdb).parent):
        return Path(initdb).parent
    return None


def require_pg_bindir() -> Path:
    """Return the PostgreSQL bindir or skip the current test (tests/conftest.py fails
    every skip when CI=true)."""
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.skip(INSTALL_HINT)
        raise AssertionError("unreachable")  # pragma: no cover
    return bindir


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# running things as an unprivileged OS user when we are root
# --------------------------------------------------------------------------


class _RunAs:
    """Runs subprocesses as an unprivileged OS user when we are root."""

    def __init__(self, os_user: str | None):
        self.pw: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            name = os_user or os.environ.get("PGCLUSTER_OS_USER") or "postgres"
            try:
                self.pw = pwd.getpwnam(name)
            except KeyError:
                for fallback in ("nobody",):
                    with contextlib.suppress(KeyError):
                        self.pw = pwd.getpwnam(fallback)
                        break
                if self.pw is None:
                    raise PrivateClusterError(
                        f"running as root and OS user {name!r} does not exist; "
                        "create it or set PGCLUSTER_OS_USER"
                    ) from None

    def popen_kwargs(self) -> dict:
        if self.pw is None:
            return {}
        env = dict(os.environ)
        env.update(HOME=self.pw.pw_dir or "/", USER=self.pw.pw_name, LOGNAME=self.pw.pw_name)
        return {
            "user": self.pw.pw_uid,
            "group": self.pw.pw_gid,
            "extra_groups": [],
            "env": env,
            "cwd": "/",
        }

    def chown(self, path: Path) -> None:
        if self.pw is not None:
            os.chown(path, self.pw.pw_uid, self.pw.pw_gid)

    def run(
        self, args: Sequence[str], *, timeout: float = 60, check: bool = True, **kw
    ) -> subprocess.CompletedProcess:
        merged = self.popen_kwargs()
        merged.update(kw)
        cp = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **merged)
        if check and cp.returncode != 0:
            raise PrivateClusterError(
                f"{' '.join(map(str, args))} exited {cp.returncode}\n"
                f"stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
            )
        return cp


# --------------------------------------------------------------------------
# TLS material
# --------------------------------------------------------------------------


def generate_self_signed_cert(
    cert_path: Path, key_path: Path, common_name: str = "localhost"
) -> None:
    """Write a self-signed certificate and its private key (PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(common_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


# --------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------


class PrivateCluster:
    """A throwaway PostgreSQL cluster on a free loopback port.

    Parameters
    ----------
    ssl:
        Generate a self-signed certificate and set ``ssl = on``.  Plain (non-SSL)
        TCP connections keep working; ``ssl_cert_path`` is the certificate (which
        can be used as a CA file by clients that want to verify it).
    password_user:
        ``(name, password)`` of a LOGIN role that must authenticate with
        scram-sha-256 over TCP (everything else is ``trust``).
    fsync:
        Keep ``fsync=off`` (default, fast) unless True.
    settings:
        Extra ``postgresql.conf`` settings, e.g. ``{"max_connections": 50}``.
    superuser:
        Name of the bootstrap superuser (default ``postgres``).
    os_user:
        OS account that runs the server when we are root (default ``postgres``).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        ssl: bool = False,
        password_user: tuple[str, str] | None = None,
        fsync: bool = False,
        settings: Mapping[str, object] | None = None,
        superuser: str = "postgres",
        os_user: str | None = None,
        port: int | None = None,
        bindir: Path | str | None = None,
        base_dir: Path | str | None = None,
        start_timeout: float = 60.0,
    ):
        b = Path(bindir) if bindir else find_pg_bindir()
        if b is None:
            raise PrivateClusterError(INSTALL_HINT)
        self.bindir = b
        self.ssl = ssl
        self.password_user = password_user
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.superuser = superuser
        self.start_timeout = start_timeout
        self._runas = _RunAs(os_user)
        self._fixed_port = port
        self.port: int = port or free_port()
        self.base_dir = Path(tempfile.mkdtemp(prefix="pgcluster-", dir=base_dir))
        self._runas.chown(self.base_dir)
        self.datadir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.logfile = self.base_dir / "postgres.log"
        self.ssl_cert_path: Path | None = None
        self.ssl_key_path: Path | None = None
        self._initialized = False
        self._cleaned = False
        self._proc: subprocess.Popen | None = None

    # ---------------- lifecycle ----------------

    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    def init(self) -> None:
        """Run initdb and write the configuration (start() calls this if needed)."""
        if self._initialized:
            return
        self.socket_dir.mkdir(mode=0o700)
        self._runas.chown(self.socket_dir)
        self._runas.run(
            [
                self._bin("initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.superuser,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            timeout=120,
        )

        # pg_hba: password role first (scram), then trust for everybody else.
        hba = ["local all all trust"]
        if self.password_user:
            u = self.password_user[0]
            hba += [
                f"host all {u} 127.0.0.1/32 scram-sha-256",
                f"host all {u} ::1/128 scram-sha-256",
            ]
        hba += ["host all all 127.0.0.1/32 trust", "host all all ::1/128 trust"]
        hba_path = self.datadir / "pg_hba.conf"
        hba_path.write_text("\n".join(hba) + "\n")

        conf: dict[str, object] = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": 200,
            "shared_buffers": "32MB",
            "fsync": "on" if self.fsync else "off",
            # Always on: with it off, PostgreSQL acknowledges commits before their WAL is
            # written, and a crash test would "lose" writes the service correctly acked.
            # (fsync off only matters if the OS crashes, which no test does.)
            "synchronous_commit": "on",
            "full_page_writes": "on" if self.fsync else "off",
            "password_encryption": "scram-sha-256",
            "log_min_messages": "warning",
            "log_connections": "off",
            "logging_collector": "off",
            "dynamic_shared_memory_type": "posix",
        }
        if self.ssl:
            self.ssl_cert_path = self.datadir / "server.crt"
            self.ssl_key_path = self.datadir / "server.key"
            generate_self_signed_cert(self.ssl_cert_path, self.ssl_key_path)
            for p in (self.ssl_cert_path, self.ssl_key_path):
                self._runas.chown(p)
            conf.update(
                ssl="on", ssl_cert_file=str(self.ssl_cert_path), ssl_key_file=str(self.ssl_key_path)
            )
        conf.update(self.settings)
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write("\n# --- PrivateCluster ---\n")
            for k, v in conf.items():
                f.write(f"{k} = {_conf_value(v)}\n")
        self._runas.chown(hba_path)
        self._initialized = True

    def start(self, *, wait: bool = True, timeout: float | None = None) -> PrivateCluster:
        """Start the postmaster; with ``wait`` return once it accepts connections.

        The postmaster is a direct child of this process (so it gets reaped even
        when PID 1 is not a real init); readiness is polled with ``pg_isready``
        (no fixed sleeps).  ``wait=False`` returns right after spawning it, which
        lets a test observe the refused / "starting up" (57P03) window.
        """
        first = not self._initialized
        self.init()
        if self.is_running:
            return self
        self._reap_orphans()
        timeout = timeout if timeout is not None else self.start_timeout
        attempts = 3 if (first and not self._fixed_port) else 1
        for attempt in range(attempts):
            self._spawn()
            if not wait:
                return self
            try:
                self.wait_ready(timeout)
                break
            except PrivateClusterError:
                if (
                    attempt + 1 < attempts
                    and not self.is_running
                    and "in use" in self.log_tail(1500).lower()
                ):
                    self._set_port(free_port())  # lost a race for the port
                    continue
                raise
        if first:
            self._ensure_password_user()
        return self

    def _spawn(self) -> None:
        with open(self.logfile, "ab") as log:
            self._proc = subprocess.Popen(
                [self._bin("postgres"), "-D", str(self.datadir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # terminal ^C goes to pytest only
                **self._runas.popen_kwargs(),
            )
        _LIVE.add(self)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll ``pg_isready`` until the server accepts connections."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.start_timeout)
        while True:
            if not self.is_running:
                raise PrivateClusterError(
                    f"postmaster is not running\n--- log ---\n{self.log_tail()}"
                )
            cp = subprocess.run(
                [
                    self._bin("pg_isready"),
                    "-q",
                    "-h",
                    self.host,
                    "-p",
                    str(self.port),
                    "-U",
                    self.superuser,
                    "-d",
                    "postgres",
                    "-t",
                    "2",
                ],
                capture_output=True,
                timeout=10,
            )
            if cp.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise PrivateClusterError(
                    f"server not ready after timeout\n--- log ---\n{self.log_tail()}"
                )
            time.sleep(0.02)  # polling interval, not a fixed wait

    _STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}

    def stop(self, mode: str = "fast", *, timeout: float = 60) -> None:
        """Shut down in ``smart``/``fast``/``immediate`` mode and wait for exit.

        fast: backends get SIGTERM -> clients see FATAL 57P01 admin_shutdown.
        immediate: SIGQUIT, no checkpoint (crash recovery on next start).
        """
        if mode not in self._STOP_SIGNALS:
            raise ValueError(mode)
        if not self._initialized or not self.is_running:
            return
        self.stop_nowait(mode)
        deadline = time.monotonic() + timeout
        while self.is_running:
            if time.monotonic() > deadline:
                raise PrivateClusterError(
                    f"stop -m {mode} did not stop the server\n{self.log_tail()}"
                )
            time.sleep(0.01)
        self._reap_orphans()

    def stop_nowait(self, mode: str = "fast") -> None:
        """Send the shutdown signal to the postmaster and return immediately."""
        pid = self.postmaster_pid
        if pid is not None and _pid_alive(pid):
            os.kill(pid, self._STOP_SIGNALS[mode])

    def restart(self, mode: str = "fast") -> PrivateCluster:
        self.stop(mode)
        return self.start()

    def kill(self, *, timeout: float = 30) -> None:
        """SIGKILL the postmaster (simulated crash) and wait for its children to die."""
        pid = self.postmaster_pid
        if pid is None or not _pid_alive(pid):
            return
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._reap_orphans(timeout=timeout)
        # stale lock files would make the next postmaster refuse to start if the
        # old PID is still a zombie somewhere
        for f in [self.datadir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*")]:
            with contextlib.suppress(OSError):
                f.unlink()

    def crash(self, *, timeout: float = 30) -> list[int]:
        """SIGKILL every process of the cluster at once; return their pids.

        This is what an OOM kill of the server's cgroup or ``kill -9 -<pgid>`` does: no
        process gets to write, flush or clean up anything. (``kill()`` SIGKILLs only the
        postmaster, whose backends live on until they notice.) The postmaster runs in a
        session of its own, so it and all its backends form one process group, signalled by
        one ``killpg``; a process of the data directory outside that group (none is expected)
        gets SIGKILL right after. The lock file and sockets stay behind as after a real crash;
        the next ``start()`` runs crash recovery (WAL replay).

        Unlike a power cut, the kernel's page cache survives: data PostgreSQL wrote but did
        not fsync is not lost, so this proves what a crash of the server costs, not what
        fsync protects against.
        """
        pid = self.postmaster_pid
        if pid is None or not _pid_alive(pid):
            raise PrivateClusterError("the cluster is not running")
        pids = self._processes_in_datadir()
        others = []
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(p) != pid:
                    others.append(p)
        os.killpg(pid, signal.SIGKILL)
        for p in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while self.is_running or self._processes_in_datadir():  # is_running reaps our child
            if time.monotonic() > deadline:
                raise PrivateClusterError(f"processes of the cluster survived SIGKILL: {pids}")
            time.sleep(0.005)
        return pids

    def _reap_orphans(self, timeout: float = 30) -> None:
        """Wait until no process (orphaned backend) has the data dir as cwd.

        Backends notice postmaster death by themselves; a new postmaster
        refuses to start while they still hold the old shared memory.
        """
        deadline = time.monotonic() + timeout
        while True:
            pids = self._processes_in_datadir()
            if not pids:
                return
            if time.monotonic() > deadline:
                for p in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
                return
            time.sleep(0.02)

    def _processes_in_datadir(self) -> list[int]:
        target = str(self.datadir.resolve())
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry.name}/cwd") == target:
                    found.append(int(entry.name))
        return found

    @property
    def postmaster_pid(self) -> int | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    @property
    def is_running(self) -> bool:
        if self._proc is not None and self._proc.poll() is None:
            return True
        pid = self.postmaster_pid
        return pid is not None and _pid_alive(pid)

    def cleanup(self) -> None:
        """Stop (immediate) if running and delete the directory."""
        if self._cleaned:
            return
        with contextlib.suppress(Exception):
            if self.is_running:
                self.stop("immediate", timeout=30)
        with contextlib.suppress(Exception):
            if self.is_running:
                self.kill()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        self._cleaned = True
        _LIVE.discard(self)

    def __enter__(self) -> PrivateCluster:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def __del__(self):  # best effort; tests should use cleanup()/with
        with contextlib.suppress(Exception):
            if not self._cleaned and self._initialized and self.is_running:
                self.cleanup()

    # ---------------- connecting ----------------

    def url(
        self,
        driver: str = "postgresql",
        dbname: str = "postgres",
        user: str | None = None,
        password: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        **query: str,
    ) -> str:
        """Connection URL, e.g. ``url("postgresql+asyncpg", dbname="x", ssl="require")``.

        Keyword arguments become query parameters.  With user=None and
        password=None the superuser (trust auth) is used.  Passing
        ``user=<password_user name>`` without a password fills the configured
        password in.
        """
        user = user or self.superuser
        if password is None and self.password_user and user == self.password_user[0]:
            password = self.password_user[1]
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        u = f"{driver}://{auth}@{host or self.host}:{port or self.port}/{quote(dbname, safe='')}"
        if query:
            u += "?" + urlencode(query)
        return u

    def dsn(self, **kw) -> str:
        """libpq/asyncpg style ``postgresql://`` DSN (alias of url())."""
        return self.url("postgresql", **kw)

    def psql(self, sql: str, dbname: str = "postgres", *, check: bool = True) -> str:
        """Run SQL via psql over TCP as the superuser; return stdout (unaligned, tuples only)."""
        cp = subprocess.run(
            [
                self._bin("psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                "-d",
                dbname,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "10"},
        )
        if check and cp.returncode != 0:
            raise PrivateClusterError(f"psql failed: {cp.stderr.strip()}")
        return cp.stdout.strip()

    def create_database(self, name: str, *, owner: str | None = None) -> str:
        """CREATE DATABASE name (optionally OWNER); returns name."""
        sql = f'CREATE DATABASE "{name}"'
        if owner:
            sql += f' OWNER "{owner}"'
        self.psql(sql)
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _ensure_password_user(self) -> None:
        if not self.password_user:
            return
        u, p = self.password_user
        esc = p.replace("'", "''")
        self.psql(
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{u}') THEN "
            f"CREATE ROLE \"{u}\" LOGIN CREATEDB PASSWORD '{esc}'; END IF; END$$"
        )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def _set_port(self, port: int) -> None:
        self.port = port
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write(f"port = {port}\n")

    def __repr__(self) -> str:
        state = "running" if self._initialized and self.is_running else "stopped"
        return f"<PrivateCluster {self.host}:{self.port} {state} {self.base_dir}>"


_LIVE: weakref.WeakSet[PrivateCluster] = weakref.WeakSet()


@atexit.register
def _cleanup_live_clusters() -> None:
    for c in list(_LIVE):
        with contextlib.suppress(Exception):
            c.cleanup()


def _conf_value(v: object) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v).replace("'", "''")
    return f"'{s}'"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True
