"""Shared fixtures, and the CI rule: in CI (`CI=true`) a skipped test is a failed test."""

import shutil

import pytest

from tests.helpers import IN_CI, TINY_RUN, run_module


@pytest.fixture(scope="session")
def xla_cache(tmp_path_factory) -> str:
  """A compilation cache shared by the subprocess runs of one test session (never the user's)."""
  return str(tmp_path_factory.mktemp("xla_cache"))


def _main(*args, workdir, cache):
  return run_module("agg_jax.main", f"--workdir={workdir}", f"--compilation_cache={cache}", *args)


@pytest.fixture(scope="session")
def tiny_run_output(tmp_path_factory, xla_cache):
  """A 6-step demo run of the tiny model (helpers.TINY_RUN), trained once per session, never
  interrupted: (run directory, the command's output). A test copies the directory before
  changing anything in it."""
  workdir = tmp_path_factory.mktemp("tiny_run")
  out = _main(*TINY_RUN, workdir=workdir, cache=xla_cache)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out


@pytest.fixture(scope="session")
def tiny_run(tiny_run_output):
  """The run directory of `tiny_run_output`."""
  return tiny_run_output[0]


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory, xla_cache):
  """A copy of `tiny_run` exported for CPU and TPU: (run directory, the export's output)."""
  workdir = tmp_path_factory.mktemp("exported") / "run"
  shutil.copytree(tiny_run, workdir)
  out = _main("--mode=export", "--platforms=cpu,tpu", workdir=workdir, cache=xla_cache)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out


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
