"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for browser tests.

No browser is ever downloaded: the tests use `/usr/bin/chromium` (or `CHROMIUM`), and without
it they skip (with CI=true they fail). Every host but 127.0.0.1 is unresolvable inside the
browser, and every request a page makes is recorded, so a test can assert that nothing left
the machine's loopback.

Usage::

    with Chromium() as browser:
        page = browser.new_page()
        page.goto("http://127.0.0.1:8000/docs")
        page.wait_for("document.querySelectorAll('.opblock').length > 0")
        page.click(".btn.authorize")
        page.screenshot(path)
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

DEFAULT_BINARY = "/usr/bin/chromium"
INSTALL_HINT = "install Debian's Chromium: apt-get install chromium"

# The flags the project's machines need (no background networking: the network is closed),
# and every host but the loopback address unresolvable, so a page cannot reach anything else.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--hide-scrollbars",
    "--mute-audio",
)


class ChromiumUnavailableError(RuntimeError):
    """No Chromium binary: callers skip outside CI."""


class BrowserError(AssertionError):
    """A DevTools command failed, or a condition was not met before its deadline."""


def find_chromium() -> str | None:
    """`CHROMIUM` if set, else Debian's /usr/bin/chromium, else `chromium` on PATH."""
    candidate = os.environ.get("CHROMIUM")
    if candidate:
        return candidate if os.access(candidate, os.X_OK) else None
    if os.access(DEFAULT_BINARY, os.X_OK):
        return DEFAULT_BINARY
    return shutil.which("chromium")


@dataclass
class Request:
    """One request a page made, as the Network domain reported it."""

    request_id: str
    url: str
    method: str
    resource_type: str
    request_headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    failed: str | None = None
    response_headers: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"


class _Connection:
    """One DevTools WebSocket: commands by id, events kept for waiting on, flat sessions."""

    def __init__(self, url: str) -> None:
        self._ws: ClientConnection = connect(url, max_size=None, open_timeout=10, legacy=True)
        self._ids = itertools.count(1)
        self._lock = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            # The browser closing the connection ends the reader.
            with contextlib.suppress(ConnectionClosed, OSError):
                for raw in self._ws:
                    message = json.loads(raw)
                    if "id" in message:
                        with self._lock:
                            self._replies[message["id"]] = message
                            self._lock.notify_all()
                    else:
                        for listener in list(self._listeners):
                            listener(message)
        finally:
            with self._lock:
                self._closed = True
                self._lock.notify_all()

    def on_event(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(listener)

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        self._ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        with self._lock:
            while message_id not in self._replies:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    raise BrowserError(f"no reply to {method} within {timeout}s")
                self._lock.wait(remaining)
            reply = self._replies.pop(message_id)
        if "error" in reply:
            raise BrowserError(f"{method} failed: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ws.close()
        self._reader.join(timeout=5)


class Page:
    """A tab: navigation, script evaluation, real mouse clicks and typing, screenshots."""

    def __init__(self, connection: _Connection, target_id: str, session_id: str) -> None:
        self._connection = connection
        self.target_id = target_id
        self.session_id = session_id
        self.requests: dict[str, Request] = {}
        self.console: list[str] = []
        self.exceptions: list[str] = []
        self._loaded = threading.Event()
        connection.on_event(self._on_event)

    # -- DevTools plumbing ---------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        return self._connection.send(method, params, session_id=self.session_id, **kw)

    def _on_event(self, message: dict[str, Any]) -> None:
        if message.get("sessionId") != self.session_id:
            return
        method, params = message["method"], message.get("params", {})
        if method == "Network.requestWillBeSent":
            request = params["request"]
            self.requests[params["requestId"]] = Request(
                params["requestId"],
                request["url"],
                request["method"],
                params.get("type", ""),
                {k.lower(): v for k, v in request.get("headers", {}).items()},
            )
        elif method == "Network.responseReceived":
            recorded = self.requests.get(params["requestId"])
            if recorded is not None:
                recorded.status = params["response"]["status"]
                recorded.response_headers = {
                    k.lower(): v for k, v in params["response"]["headers"].items()
                }
        elif method == "Network.loadingFailed":
            recorded = self.requests.get(params["requestId"])
            if recorded is not None:
                recorded.failed = params.get("blockedReason") or params.get("errorText", "failed")
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append(f"{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details.get("text")
            self.exceptions.append(str(description))
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self.console.append(f"{entry['level']} ({entry['source']}): {entry['text']}")
        elif method == "Page.loadEventFired":
            self._loaded.set()

    def enable(self) -> None:
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        # Content-Security-Policy violations, as the page itself sees them (this script is the
        # browser's, so the page's policy does not apply to it).
        self.send(
            "Page.addScriptToEvaluateOnNewDocument",
            {
                "source": "window.__cspViolations = [];"
                "document.addEventListener('securitypolicyviolation', (e) =>"
                " window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
            },
        )

    # -- what a person does ----------------------------------------------------------------------

    def set_viewport(self, width: int, height: int) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def goto(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and wait for the load event."""
        self._loaded.clear()
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {result['errorText']}")
        if not self._loaded.wait(timeout):
            raise BrowserError(f"{url} did not finish loading in {timeout}s")

    def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(
                f"{expression!r} threw: "
                f"{details.get('exception', {}).get('description') or details.get('text')}"
            )
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, what: str | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy; its value (fails at the deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"waited {timeout}s for {what or expression}\n"
                    f"console: {self.console[-20:]}\nexceptions: {self.exceptions[-5:]}"
                )
            time.sleep(0.05)

    def _center_of(self, selector: str, timeout: float) -> tuple[float, float]:
        """Scroll the first visible match into view; the viewport coordinates of its centre."""
        found = self.wait_for(
            f"""(() => {{
                const el = [...document.querySelectorAll({json.dumps(selector)})]
                    .find((e) => e.getClientRects().length > 0 && !e.disabled);
                if (!el) return null;
                el.scrollIntoView({{block: 'center', inline: 'center'}});
                const r = el.getBoundingClientRect();
                return [r.left + r.width / 2, r.top + r.height / 2];
            }})()""",
            timeout,
            what=f"a visible {selector}",
        )
        return float(found[0]), float(found[1])

    def click(self, selector: str, timeout: float = 15.0) -> None:
        """A real left click (mouse events at the element's centre), as a person clicks."""
        x, y = self._center_of(selector, timeout)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def type_into(self, selector: str, text: str, timeout: float = 15.0) -> None:
        """Click into a field and type `text` (input events, as a keyboard would)."""
        self.click(selector, timeout)
        self.send("Input.insertText", {"text": text})

    def screenshot(self, path: Path, *, full_page: bool = False, height: int | None = None) -> None:
        """Save a PNG of the viewport, of the whole page, or of its top `height` pixels."""
        params: dict[str, Any] = {"format": "png"}
        if full_page or height is not None:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": min(size["height"], height or size["height"]),
                "scale": 1,
            }
        data = self.send("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        """Close the tab."""
        with contextlib.suppress(BrowserError):
            self._connection.send("Target.closeTarget", {"targetId": self.target_id})

    # -- what the page did -------------------------------------------------------------------------

    def csp_violations(self) -> list[str]:
        return list(self.evaluate("window.__cspViolations || []"))

    def foreign_requests(self, origins: set[str]) -> list[str]:
        """Requests to anywhere but `origins` (data: and blob: URLs stay inside the page)."""
        return [
            f"{r.method} {r.url}"
            for r in self.requests.values()
            if urlsplit(r.url).scheme not in ("data", "blob") and r.origin not in origins
        ]


class Chromium:
    """A headless Chromium with its own empty profile, talked to over its DevTools socket."""

    def __init__(self, binary: str | None = None, *, startup_timeout: float = 30.0) -> None:
        self._binary = binary
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._connection: _Connection | None = None
        self._stderr: Path | None = None

    def start(self) -> Chromium:
        binary = self._binary or find_chromium()
        if binary is None:
            raise ChromiumUnavailableError(f"no Chromium binary found; {INSTALL_HINT}")
        self._profile = tempfile.TemporaryDirectory(prefix="taskapi-chromium-")
        profile = Path(self._profile.name)
        self._stderr = profile / "stderr.log"
        with self._stderr.open("wb") as stderr:
            self._process = subprocess.Popen(
                [
                    binary,
                    *FLAGS,
                    f"--user-data-dir={profile / 'profile'}",
                    "--remote-debugging-address=127.0.0.1",
                    "--remote-debugging-port=0",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its helper processes go with it (stop())
            )
        try:
            self._connection = _Connection(self._browser_endpoint(profile / "profile"))
        except BaseException:
            self.stop()
            raise
        return self

    def _browser_endpoint(self, profile: Path) -> str:
        """The browser's DevTools WebSocket, from the DevToolsActivePort file it writes."""
        active_port = profile / "DevToolsActivePort"
        deadline = time.monotonic() + self._startup_timeout
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrowserError(f"Chromium exited ({self._process.returncode}):\n{self.output}")
            with contextlib.suppress(OSError):
                lines = active_port.read_text().split()
                if len(lines) == 2:
                    return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            time.sleep(0.05)
        raise BrowserError(f"Chromium not ready in {self._startup_timeout}s:\n{self.output}")

    @property
    def output(self) -> str:
        if self._stderr is None or not self._stderr.exists():
            return ""
        return self._stderr.read_text(errors="replace")[-4000:]

    def new_page(self, width: int = 1280, height: int = 900) -> Page:
        """A new tab with the Network, Runtime and Log domains recording."""
        assert self._connection is not None, "browser not started"
        target = self._connection.send("Target.createTarget", {"url": "about:blank"})
        attached = self._connection.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self._connection, target["targetId"], attached["sessionId"])
        page.enable()
        page.set_viewport(width, height)
        return page

    def stop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.send("Browser.close", timeout=5)
            self._connection.close()
            self._connection = None
        process, self._process = self._process, None
        if process is not None:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # our own session's group, by id
                process.wait(timeout=5)
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_or_skip() -> Chromium:
    """A started browser; without Chromium the test skips (and fails with CI=true)."""

    browser = Chromium()
    try:
        browser.start()
    except ChromiumUnavailableError as exc:
        pytest.skip(f"Chromium is not available: {exc}")
    return browser
