"""`/docs` and `/redoc` in headless Chromium, against a real `uvicorn main:app`, offline.

The browser can resolve no host but 127.0.0.1, every request the pages make is recorded, and
the pages run under the service's Content-Security-Policy: Swagger UI renders the task
operations, "Authorize" with a development token and "Try it out" + "Execute" on
`GET /api/v1/tasks` answer 200 as the page shows it, and ReDoc renders every operation, with
nothing fetched from another host and no policy violation (but ReDoc's one logo, blocked).

Without Chromium these tests skip locally (apt-get install chromium); with CI=true they fail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskapi.docs import CONTENT_SECURITY_POLICY
from tests.faults._support import TASKS, ServiceProcess
from tests.support.chromium import Page
from tests.support.tokens import TEST_SECRET, make_token

LIST_TASKS = "#operations-tasks-list_tasks_api_v1_tasks_get"
TASK_OPERATIONS = {
    f"GET {TASKS}",
    f"POST {TASKS}",
    f"GET {TASKS}/{{task_id}}",
    f"PUT {TASKS}/{{task_id}}",
    f"DELETE {TASKS}/{{task_id}}",
}
# ReDoc's sidebar links Redocly's logo from its CDN, unconditionally: the page's policy
# blocks it before a request is sent (and ReDoc hides the image when it fails to load).
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The service as a user runs it (SQLite, migrated at start), with the test secret."""
    database = tmp_path_factory.mktemp("docs") / "docs.db"
    process = ServiceProcess(
        env={
            "DATABASE_URL": "",
            "SQLITE_PATH": str(database),
            "JWT_SECRET": TEST_SECRET,
            "JWKS_URL": "",
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "WARNING",
            "RATE_LIMIT_ENABLED": "false",
        }
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def document_csp(page: Page, url: str) -> str | None:
    """The Content-Security-Policy the browser received with the page at `url`."""
    for request in page.requests.values():
        if request.url == url and request.resource_type == "Document":
            return request.response_headers.get("content-security-policy")
    raise AssertionError(f"no document request for {url}")


def test_swagger_ui_authorize_and_try_it_out_offline(
    service: ServiceProcess, page: Page, save_screenshot
) -> None:
    token = make_token("docs-user", name="Docs User")
    created = httpx.post(
        service.base_url + TASKS,
        json={"title": "Try the API", "description": "from /docs", "priority": "high"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status_code == 201, created.text

    url = service.base_url + "/docs"
    page.goto(url)
    operations = page.wait_for(
        """(() => {
            const ops = [...document.querySelectorAll('.opblock-summary')].map((s) =>
                s.querySelector('.opblock-summary-method').textContent + ' ' +
                s.querySelector('.opblock-summary-path').dataset.path);
            return ops.length >= 7 ? ops : null;
        })()""",
        what="Swagger UI to render the operations",
    )
    assert set(operations) >= TASK_OPERATIONS, operations
    assert document_csp(page, url) == CONTENT_SECURITY_POLICY

    # Authorize: the bearer scheme's dialog, typed into as a person does.
    page.click(".auth-wrapper .authorize")
    page.type_into(".modal-ux input", token)
    page.click(".modal-ux .auth-btn-wrapper .authorize")
    page.wait_for(
        "[...document.querySelectorAll('.modal-ux .auth-btn-wrapper button')]"
        ".some((b) => b.textContent.trim() === 'Logout')",
        what="the dialog to show the scheme authorized",
    )
    page.click(".modal-ux .btn-done")
    page.wait_for("!document.querySelector('.modal-ux')", what="the dialog to close")

    # Try it out on GET /api/v1/tasks, then Execute: the page shows the live response.
    page.click(f"{LIST_TASKS} .opblock-summary-control")
    page.click(f"{LIST_TASKS} .try-out__btn")
    page.click(f"{LIST_TASKS} .execute")
    status = page.wait_for(
        f"document.querySelector('{LIST_TASKS} .live-responses-table tbody .response-col_status')"
        "?.textContent.trim()",
        what="the live response",
    )
    assert status == "200"
    shown = page.evaluate(
        f"document.querySelector('{LIST_TASKS} .live-responses-table "
        "tbody .response-col_description pre').textContent"
    )
    assert [task["title"] for task in json.loads(shown)] == ["Try the API"]

    sent = [
        r
        for r in page.requests.values()
        if r.method == "GET" and r.url.startswith(service.base_url + TASKS)
    ]
    assert len(sent) == 1
    assert sent[0].request_headers.get("authorization") == f"Bearer {token}"

    # Everything came from the service's own origin, within its policy.
    assert page.foreign_requests({service.base_url}) == []
    assert page.csp_violations() == []
    assert page.exceptions == []
    loaded = {r.url.removeprefix(service.base_url) for r in page.requests.values()}
    assert {
        "/docs",
        "/docs/static/swagger-ui-bundle.js",
        "/docs/static/swagger-ui.css",
        "/docs/static/swagger-init.js",
        "/openapi.json",
    } <= loaded

    # The page from the top down to the live response (the Authorize button, the operations,
    # the request Swagger UI sent and the 200 it shows).
    bottom = page.evaluate(
        f"document.querySelector('{LIST_TASKS} .live-responses-table')"
        ".getBoundingClientRect().bottom + window.scrollY"
    )
    page.evaluate("window.scrollTo(0, 0)")
    page.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 0, "y": 0})  # no hover
    save_screenshot(page, "docs.png", height=int(bottom) + 16)


def test_redoc_renders_offline(service: ServiceProcess, page: Page, save_screenshot) -> None:
    url = service.base_url + "/redoc"
    page.goto(url)
    rendered = page.wait_for(
        """(() => {
            const ids = [...document.querySelectorAll('[data-section-id^="operation/"]')]
                .map((e) => e.dataset.sectionId);
            return ids.length >= 7 ? ids : null;
        })()""",
        what="ReDoc to render the operations",
    )
    assert "operation/list_tasks_api_v1_tasks_get" in rendered
    assert "List the user's tasks" in page.evaluate("document.body.innerText")
    assert document_csp(page, url) == CONTENT_SECURITY_POLICY

    foreign = [
        r
        for r in page.requests.values()
        if not r.url.startswith(("data:", "blob:")) and r.origin != service.base_url
    ]
    assert [(r.url, r.failed) for r in foreign] in ([], [(REDOC_LOGO, "csp")])
    assert set(page.csp_violations()) <= {f"img-src {REDOC_LOGO}"}
    assert page.exceptions == []
    save_screenshot(page, "redoc.png")


def test_docs_assets_come_from_the_pinned_package(service: ServiceProcess) -> None:
    """The files served are the package's own, byte for byte (nothing copied into the repo)."""
    from taskapi.docs import VENDOR_DIR, VENDOR_FILES

    for name in VENDOR_FILES:
        response = httpx.get(f"{service.base_url}/docs/static/{name}")
        assert response.status_code == 200, name
        assert response.content == (VENDOR_DIR / name).read_bytes(), name
    assert not list(Path(__file__).resolve().parents[2].glob("taskapi/**/swagger-ui-bundle.js"))
