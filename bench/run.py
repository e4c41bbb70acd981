#!/usr/bin/env python
"""The benchmark's command line (what it does: bench/__init__.py, bench/README.md)."""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a script, Python puts bench/ first on sys.path; the runner is the package
    # `bench` (its modules import each other as bench.*), so the repository goes there instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    from bench.cli import main

    sys.exit(main())
