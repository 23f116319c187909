"""Shared fixtures."""

import pytest


@pytest.fixture(scope="session")
def xla_cache(tmp_path_factory) -> str:
  """A compilation cache shared by the subprocess runs of one test session (never the user's)."""
  return str(tmp_path_factory.mktemp("xla_cache"))
