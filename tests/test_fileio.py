"""Atomic writes: complete files or none."""

import os

import pytest

from agg_jax import fileio


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "metrics.json"
  fileio.atomic_write_text(path, "old")

  def fail(f):
    f.write(b"half")
    raise RuntimeError("preempted")

  with pytest.raises(RuntimeError, match="preempted"):
    fileio.atomic_write(path, fail)
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["metrics.json"]


def test_text_is_written_whole(tmp_path):
  fileio.atomic_write_text(tmp_path / "a.md", "x" * 100_000)
  assert (tmp_path / "a.md").read_text() == "x" * 100_000
