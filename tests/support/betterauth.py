"""Run a real Better Auth server (tests/betterauth/server.mjs) for integration tests."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import queue
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent / "betterauth"
CLIENT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "clients" / "typescript"
SUPPORTED_ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256", "HS256")
SESSION_COOKIE = "better-auth.session_token"


class BetterAuthUnavailableError(RuntimeError):
    """Node.js/npm are missing or the npm install failed: callers may skip outside CI."""


class BetterAuthServerError(RuntimeError):
    """The Better Auth server failed to start or answered a request unexpectedly."""


@dataclass(frozen=True)
class Session:
    """A signed-in browser session: the cookies a front end would hold, and the user record."""

    cookies: dict[str, str]
    user: dict[str, Any]
    session_token: str  # the opaque token sign-in/sign-up return: NOT a JWT

    @property
    def user_id(self) -> str:
        """The Better Auth user id (the JWT's `sub`)."""
        return str(self.user["id"])

    @property
    def cookie_header(self) -> str:
        """The Cookie header value for this session."""
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())


@dataclass(frozen=True)
class Rotation:
    """Result of a key rotation: the new signing kid and the kids it replaced."""

    kid: str
    previous: list[str] = field(default_factory=list)


def _node_modules_current(project: Path) -> bool:
    """Whether node_modules holds exactly the versions package.json pins."""
    manifest = json.loads((project / "package.json").read_text())
    pinned = {**manifest.get("dependencies", {}), **manifest.get("devDependencies", {})}
    for name, version in pinned.items():
        installed = project / "node_modules" / name / "package.json"
        try:
            if json.loads(installed.read_text()).get("version") != version:
                return False
        except (OSError, ValueError):
            return False
    return (project / "node_modules" / ".package-lock.json").exists()


def ensure_node_project(project: Path = PROJECT_DIR, *, timeout: float = 600.0) -> None:
    """Check node/npm are installed and run `npm ci` if node_modules is missing or stale."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise BetterAuthUnavailableError(
                f"`{tool}` is not on PATH; install Node.js >= 20 to run the Better Auth tests"
            )
    if _node_modules_current(project):
        return
    lock_path = Path(tempfile.gettempdir()) / "taskapi-betterauth-npm-ci.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers install once
        if _node_modules_current(project):
            return
        try:
            result = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=project,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BetterAuthUnavailableError(f"`npm ci` in {project} timed out") from exc
        if result.returncode != 0:
            raise BetterAuthUnavailableError(
                f"`npm ci` in {project} failed ({result.returncode}):\n{result.stderr[-4000:]}"
            )


class BetterAuthServer:
    """A Better Auth server (email/password + jwt plugin) on a free loopback port.

    Usage::

        with BetterAuthServer("RS256") as ba:
            alice = ba.sign_up("alice@example.com", "password-1234", "Alice")
            token = ba.get_jwt(alice)
            ba.rotate_keys()
    """

    def __init__(
        self,
        alg: str = "EdDSA",
        *,
        secret: str | None = None,
        port: int = 0,
        grace_period: int = 3600,
        jwt_expiration: str | None = None,
        startup_timeout: float = 60.0,
        request_timeout: float = 10.0,
        project: Path = PROJECT_DIR,
        hs256_secret: str | None = None,
        serve_test_page: bool = False,
    ) -> None:
        if alg not in SUPPORTED_ALGORITHMS:
            raise ValueError(f"alg must be one of {SUPPORTED_ALGORITHMS}, not {alg!r}")
        if (alg == "HS256") != (hs256_secret is not None):
            raise ValueError("alg='HS256' needs hs256_secret (the secret shared with the API)")
        self.alg = alg
        self.hs256_secret = hs256_secret
        self.serve_test_page = serve_test_page
        self.secret = secret or secrets.token_urlsafe(32)
        self._requested_port = port
        self._grace_period = grace_period
        self._jwt_expiration = jwt_expiration
        self._startup_timeout = startup_timeout
        self._request_timeout = request_timeout
        self._project = project
        self._process: subprocess.Popen[str] | None = None
        self._port: int | None = None
        self._http: httpx.Client | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._output: collections.deque[str] = collections.deque(maxlen=200)
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> BetterAuthServer:
        """Install the Node project if needed, start the server and wait for its READY line."""
        if self._process is not None:
            raise BetterAuthServerError("server already started")
        ensure_node_project(self._project)
        env = {
            **os.environ,
            "PORT": str(self._requested_port),
            "JWT_ALG": self.alg,
            "BETTER_AUTH_SECRET": self.secret,
            "JWKS_GRACE_PERIOD": str(self._grace_period),
            "EXIT_ON_STDIN_EOF": "1",
            "BETTER_AUTH_TELEMETRY": "0",
        }
        if self._jwt_expiration:
            env["JWT_EXPIRATION"] = self._jwt_expiration
        if self.hs256_secret is not None:
            env["HS256_SECRET"] = self.hs256_secret
        if self.serve_test_page:
            # The browser test page under /app/, bundled with the typed client, whose
            # dependencies come from its own package.
            ensure_node_project(CLIENT_PROJECT_DIR)
            env["TEST_PAGE"] = "1"
        for name in ("NODE_ENV", "TEST"):  # Better Auth relaxes origin checks in "test" mode
            env.pop(name, None)
        self._process = subprocess.Popen(
            ["node", "server.mjs"],
            cwd=self._project,
            env=env,
            text=True,
            bufsize=1,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._process.stdout is not None
        assert self._process.stderr is not None
        self._spawn_reader(self._process.stdout, "stdout", forward=True)
        self._spawn_reader(self._process.stderr, "stderr", forward=False)
        try:
            self._port = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self._http = httpx.Client(
            base_url=self.base_url, timeout=self._request_timeout, follow_redirects=False
        )
        return self

    def _spawn_reader(self, stream: IO[str], name: str, *, forward: bool) -> None:
        """Drain one pipe in a thread (so the child never blocks), keeping recent lines."""

        def pump() -> None:
            for line in stream:
                self._output.append(f"[{name}] {line.rstrip()}")
                if forward:
                    self._lines.put(line.rstrip("\n"))
            if forward:
                self._lines.put(None)  # EOF

        thread = threading.Thread(target=pump, name=f"betterauth-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _wait_ready(self) -> int:
        """Block until the server prints `READY <port>` (or dies, or the timeout passes)."""
        deadline = time.monotonic() + self._startup_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BetterAuthServerError(
                    f"Better Auth server not ready after {self._startup_timeout}s\n{self.output}"
                )
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                assert self._process is not None
                code = self._process.wait(timeout=5)
                raise BetterAuthServerError(
                    f"Better Auth server exited ({code}) before READY\n{self.output}"
                )
            if line.startswith("READY "):
                return int(line.split()[1])

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5s) and release its resources."""
        if self._http is not None:
            self._http.close()
            self._http = None
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> BetterAuthServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._port is None:
            raise BetterAuthServerError("server not started")
        return self._port

    @property
    def base_url(self) -> str:
        """Better Auth's base URL, which is also the JWTs' `iss` and `aud`."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        """The JWKS endpoint the service should be configured with."""
        return f"{self.base_url}/api/auth/jwks"

    @property
    def output(self) -> str:
        """The server's recent stdout/stderr lines (for failure messages)."""
        return "\n".join(self._output)

    # -- front-end flows ---------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        session: Session | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One request the way a browser on Better Auth's origin would send it."""
        if self._http is None:
            raise BetterAuthServerError("server not started")
        headers = {"Origin": self.base_url}
        if session is not None:
            headers["Cookie"] = session.cookie_header
        try:
            return self._http.request(method, path, headers=headers, json=json_body)
        finally:
            self._http.cookies.clear()  # sessions never leak into each other

    @staticmethod
    def _check(response: httpx.Response, what: str) -> Any:
        """The JSON body of a 200 response; otherwise a BetterAuthServerError."""
        if response.status_code != 200:
            raise BetterAuthServerError(
                f"{what} failed: HTTP {response.status_code} {response.text[:2000]}"
            )
        return response.json()

    def _session_from(self, response: httpx.Response, what: str) -> Session:
        """The Session set by a sign-up/sign-in response."""
        body = self._check(response, what)
        cookies = dict(response.cookies.items())
        if SESSION_COOKIE not in cookies:
            raise BetterAuthServerError(f"{what}: no {SESSION_COOKIE} cookie was set")
        return Session(cookies=cookies, user=body["user"], session_token=body["token"])

    def sign_up(self, email: str, password: str, name: str, image: str | None = None) -> Session:
        """Create a user with POST /api/auth/sign-up/email; returns its signed-in session."""
        payload: dict[str, Any] = {"email": email, "password": password, "name": name}
        if image is not None:
            payload["image"] = image
        response = self._request("POST", "/api/auth/sign-up/email", json_body=payload)
        return self._session_from(response, "sign-up")

    def sign_in(self, email: str, password: str) -> Session:
        """Sign in with POST /api/auth/sign-in/email; returns a new session."""
        response = self._request(
            "POST", "/api/auth/sign-in/email", json_body={"email": email, "password": password}
        )
        return self._session_from(response, "sign-in")

    def update_user(self, session: Session, **fields: Any) -> None:
        """Change profile fields (e.g. name=, image=) with POST /api/auth/update-user."""
        self._check(
            self._request("POST", "/api/auth/update-user", session=session, json_body=fields),
            "update-user",
        )

    def sign_out(self, session: Session) -> None:
        """End the session with POST /api/auth/sign-out."""
        self._check(
            self._request("POST", "/api/auth/sign-out", session=session, json_body={}), "sign-out"
        )

    def get_jwt(self, session: Session) -> str:
        """A fresh JWT for the session from GET /api/auth/token (what a front end sends us)."""
        body = self._check(self._request("GET", "/api/auth/token", session=session), "token")
        return str(body["token"])

    def get_session_jwt(self, session: Session) -> str:
        """The JWT from the `set-auth-jwt` header of GET /api/auth/get-session."""
        response = self._request("GET", "/api/auth/get-session", session=session)
        self._check(response, "get-session")
        token: str | None = response.headers.get("set-auth-jwt")
        if not token:
            raise BetterAuthServerError("get-session returned no set-auth-jwt header")
        return token

    # -- keys --------------------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        """The published JWKS document."""
        result: dict[str, Any] = self._check(self._request("GET", "/api/auth/jwks"), "jwks")
        return result

    def published_kids(self) -> list[str]:
        """The kids currently published in the JWKS."""
        return [str(key["kid"]) for key in self.jwks()["keys"]]

    def rotate_keys(self) -> Rotation:
        """Sign from now on with a new key; the old keys stay published (grace period)."""
        body = self._check(self._request("POST", "/test/rotate"), "rotate")
        return Rotation(kid=body["kid"], previous=list(body["previous"]))

    def retire_keys(self) -> list[str]:
        """End the grace period: unpublish every rotated-out key; returns their kids."""
        body = self._check(self._request("POST", "/test/retire"), "retire")
        return list(body["removed"])

    def set_jwks_status(self, status: int | None) -> None:
        """Make GET /api/auth/jwks answer `status` (simulated outage); None restores it."""
        self._check(
            self._request("POST", "/test/jwks-status", json_body={"status": status}), "jwks-status"
        )

    def signing_kid(self) -> str | None:
        """The kid new tokens are signed with (None before the first key is minted)."""
        signing = self._check(self._request("GET", "/test/keys"), "keys")["signing"]
        return None if signing is None else str(signing)


def start_or_skip(alg: str = "EdDSA", **options: Any) -> BetterAuthServer:
    """A started server; without Node.js the test skips (a failure when CI=true)."""
    server = BetterAuthServer(alg, **options)
    try:
        server.start()
    except BetterAuthUnavailableError as exc:
        pytest.skip(f"Better Auth test server unavailable: {exc}")
    return server
