"""Fixtures for the front-end tests: headless Chromium, a real service process, screenshots."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chromium import Chromium, Page, start_or_skip


@pytest.fixture(scope="session")
def browser() -> Iterator[Chromium]:
    """One headless Chromium for the session (each test opens its own tab)."""
    chromium = start_or_skip()
    try:
        yield chromium
    finally:
        chromium.stop()


@pytest.fixture
def page(browser: Chromium) -> Iterator[Page]:
    """A tab of its own for the test, closed after it."""
    tab = browser.new_page(1280, 900)
    try:
        yield tab
    finally:
        tab.close()


@pytest.fixture
def save_screenshot(tmp_path: Path):
    """Where a test's screenshot goes: its tmp_path, and `SCREENSHOT_DIR` too when set
    (`make screenshots` sets it to docs/screenshots)."""

    def save(page, name: str, **options) -> Path:
        path = tmp_path / name
        page.screenshot(path, **options)
        target = os.environ.get("SCREENSHOT_DIR")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(target) / name)
        return path

    return save
