"""Entry point for `uvicorn main:app`: builds the app from the environment and `.env`."""

import sys

from taskapi.app import create_app
from taskapi.config import ConfigError

try:
    app = create_app()
except ConfigError as error:
    print(f"taskapi: configuration error: {error}", file=sys.stderr)
    raise SystemExit(2) from None
