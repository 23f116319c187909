"""Crash-safe writes: complete files or none; appends on disk when they return."""

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


def test_append_durably_creates_the_folder_and_appends(tmp_path, monkeypatch):
  synced = []
  real_fsync = os.fsync
  monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
  path = tmp_path / "parts" / "log.jsonl"
  fileio.append_durably(path, "one\n")
  fileio.append_durably(path, "two\n")
  assert path.read_text() == "one\ntwo\n"
  assert len(synced) == 2


def test_read_json_lines_drops_torn_and_incomplete_lines(tmp_path):
  path = tmp_path / "log.jsonl"
  path.write_text('{"step": 1}\n\n[2]\n{"other": 3}\n{"step": 4}\n{"step": 5, "lo')
  assert fileio.read_json_lines(path, ("step",)) == ([{"step": 1}, {"step": 4}], 3, False)
  path.write_text('{"step": 1}\n')
  assert fileio.read_json_lines(path) == ([{"step": 1}], 0, True)
