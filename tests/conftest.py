"""Shared fixtures, and the CI rule: in CI (`CI=true`) a skipped test is a failed test."""

import pytest

from tests.helpers import IN_CI


@pytest.fixture(scope="session")
def xla_cache(tmp_path_factory) -> str:
  """A compilation cache shared by the subprocess runs of one test session (never the user's)."""
  return str(tmp_path_factory.mktemp("xla_cache"))


def _fail_skip_in_ci(report) -> None:
  if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (f"skipped in CI, where every package, backend and data set must be "
                       f"present: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # pylint: disable=unused-argument
  outcome = yield
  _fail_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):  # pylint: disable=unused-argument
  """A module skipped as a whole (a module-level importorskip) fails in CI too."""
  outcome = yield
  _fail_skip_in_ci(outcome.get_result())
