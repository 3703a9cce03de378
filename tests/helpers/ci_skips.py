"""Under CI (``CI=1``, set by .ci/run), a test that skips for a missing optional part fails instead.

A missing part is what :func:`skip_missing` names (mediapipe, the shared datasets, ...) or what
``pytest.importorskip`` could not import. Other skips (no bfloat16 hardware, "torch is installed") stay skips.
tests/conftest.py imports the hook; tests/test_ci_skips.py runs it.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

MISSING = "missing optional part: "


def skip_missing(what: str) -> NoReturn:
    """Skips the test because ``what`` is not there (a failure under CI)."""
    pytest.skip(MISSING + what)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


def _fail_under_ci(report) -> None:
    if not (os.environ.get("CI") and report.skipped):
        return
    reason = _skip_reason(report)
    if MISSING in reason or "could not import" in reason:
        report.outcome = "failed"
        report.longrepr = f"CI=1: a missing optional part fails instead of skipping ({reason})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    _fail_under_ci((yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module-level ``pytest.importorskip`` skips the whole file at collection."""
    _fail_under_ci((yield).get_result())
