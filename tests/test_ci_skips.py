"""With CI=true nothing may skip: the one rule, in tests/conftest.py, checked on a probe suite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Every way a test here skips: a call, a marker, a fixture, and a whole module.
PROBE = """
import pytest

@pytest.fixture
def needs_something():
    pytest.skip("install something")

def test_passes():
    pass

def test_skips_by_call():
    pytest.skip("install redis-server")

@pytest.mark.skipif(True, reason="install node")
def test_skips_by_marker():
    pass

def test_skips_in_a_fixture(needs_something):
    pass

@pytest.mark.xfail(reason="a known failure is not a skip", strict=True)
def test_expected_failure():
    assert False
"""
PROBE_MODULE_SKIP = """
import pytest

pytest.importorskip("a_module_that_is_not_installed", reason="pip install it")

def test_never_collected():
    pass
"""
# The probe suite's conftest is the project's own (its hooks and fixtures): the rule under
# test, not a copy of it.
PROBE_CONFTEST = "from tests.conftest import *  # noqa: F403\n"


def run_probe(tmp_path: Path, source: str, ci: bool) -> tuple[int, dict[str, int], str]:
    """Run the probe `source` as a test module; exit status, summary counts and output."""
    (tmp_path / "conftest.py").write_text(PROBE_CONFTEST)
    (tmp_path / "test_probe.py").write_text(source)
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    if ci:
        env["CI"] = "true"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout.strip(), result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}
    return result.returncode, counts, result.stdout


def test_with_ci_every_skipped_test_fails(tmp_path: Path) -> None:
    status, counts, output = run_probe(tmp_path, PROBE, ci=True)
    assert status == pytest.ExitCode.TESTS_FAILED, output
    # The three skipping tests fail with their reason (a skip in setup, by a marker or a
    # fixture, as an error, as pytest reports any setup failure); a pass is a pass, an xfail
    # an xfail.
    assert counts == {"failed": 1, "errors": 2, "passed": 1, "xfailed": 1}, output
    for reason in ("install redis-server", "install node", "install something"):
        assert f"CI=true: nothing may skip, and this skipped: {reason}" in output, output


def test_with_ci_a_skipped_module_fails_the_run(tmp_path: Path) -> None:
    status, counts, output = run_probe(tmp_path, PROBE_MODULE_SKIP, ci=True)
    assert status != pytest.ExitCode.OK, output
    assert counts == {"error": 1}, output
    assert "CI=true: nothing may skip, and this skipped: pip install it" in output, output


def test_without_ci_skips_are_skips(tmp_path: Path) -> None:
    status, counts, output = run_probe(tmp_path, PROBE, ci=False)
    assert status == pytest.ExitCode.OK, output
    assert counts == {"passed": 1, "skipped": 3, "xfailed": 1}, output
    status, counts, output = run_probe(tmp_path, PROBE_MODULE_SKIP, ci=False)
    assert status == pytest.ExitCode.NO_TESTS_COLLECTED, output  # all it had was skipped
    assert counts == {"skipped": 1}, output
