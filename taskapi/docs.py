"""`/docs` (Swagger UI) and `/redoc`, served entirely from the service's own origin.

FastAPI's own pages load Swagger UI and ReDoc from a public CDN (unpinned, without integrity
hashes) and ReDoc's fonts from Google: offline, behind a strict firewall or under a
Content-Security-Policy they are blank. Here the assets come from the pinned `fastapi-offline`
package (Swagger UI's dist and ReDoc's standalone bundle), are served under `/docs/static/`,
and the two pages carry a policy that allows the service's own origin only. Swagger UI's
start-up is a static file of ours (`docs_static/swagger-init.js`), not an inline script.
"""

from __future__ import annotations

import html
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC_URL = "/docs/static"
HTML_PAGES = frozenset({"/docs", "/redoc"})
"""The pages that set their own Content-Security-Policy (the edge sets the API's elsewhere)."""
VENDOR_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
OWN_DIR = Path(__file__).resolve().parent / "docs_static"
VENDOR_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")

# Two inline <style> blocks ReDoc creates, allowed by their hashes (no other inline style):
# the empty block styled-components fills through the CSSOM, and perfect-scrollbar's
# stylesheet as ReDoc 2.5.3 embeds it. A newer ReDoc that changes it shows up as a CSP
# violation in tests/docs/test_docs_browser.py.
EMPTY_STYLE_HASH = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
SCROLLBAR_STYLE_HASH = "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='"

# Only this origin: scripts and styles are files from it (no inline script, no eval), the
# pages fetch only /openapi.json and the API, and nothing may frame them. `data:` images are
# Swagger UI's inline SVG icons (in its CSS); a `blob:` worker is ReDoc's search index, built
# by the page itself. (ReDoc's sidebar links a logo on cdn.redoc.ly: this policy blocks it
# before any request is sent, and ReDoc hides the image.)
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        f"style-src 'self' {EMPTY_STYLE_HASH} {SCROLLBAR_STYLE_HASH}",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

_SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - Swagger UI</title>
<link rel="icon" type="image/png" href="{static}/favicon.png">
<link rel="stylesheet" href="{static}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{static}/swagger-ui-bundle.js"></script>
<script src="{static}/swagger-init.js"></script>
</body>
</html>
"""

_REDOC_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - ReDoc</title>
<link rel="icon" type="image/png" href="{static}/favicon.png">
<link rel="stylesheet" href="{static}/redoc.css">
</head>
<body>
<redoc spec-url="{openapi_url}"></redoc>
<script src="{static}/redoc.standalone.js"></script>
</body>
</html>
"""


def _check_assets() -> None:
    """Fail at start-up, not on a blank page, if the package no longer ships an asset."""
    missing = [name for name in VENDOR_FILES if not (VENDOR_DIR / name).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline no longer ships {missing} in {VENDOR_DIR}")


def install_docs(app: FastAPI) -> None:
    """Serve `/docs`, `/redoc` and their assets; the app must be built with
    `docs_url=None, redoc_url=None` (FastAPI's CDN pages)."""
    _check_assets()
    openapi_path = app.openapi_url
    assert openapi_path is not None
    app.mount(
        STATIC_URL,
        StaticFiles(directory=OWN_DIR, packages=[("fastapi_offline", "static")]),
        name="docs-static",
    )

    def render(template: str, request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", ""))
        page = template.format(
            title=html.escape(app.title),
            static=html.escape(root + STATIC_URL),
            openapi_url=html.escape(root + openapi_path),
        )
        return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return render(_SWAGGER_PAGE, request)

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return render(_REDOC_PAGE, request)
