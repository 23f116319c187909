"""Crash-safe file writes: a reader (or a rerun after a crash) never sees half a file, and an
appended line is on disk before the call returns."""

import json
import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
  """Calls `write(f)` on a temporary file beside `path`, then renames it to `path`.

  The folder is created if needed.
  """
  path = os.fspath(path)
  folder = os.path.dirname(path) or "."
  os.makedirs(folder, exist_ok=True)
  handle, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
  os.chmod(tmp, 0o644)
  try:
    with os.fdopen(handle, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def append_durably(path: str | os.PathLike, text: str) -> None:
  """Appends ``text`` to ``path`` in one write and waits until it is on disk (journals such as
  JSON-lines manifests; a reader drops a torn last line). The folder is created if needed."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "a", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def read_json_lines(path: str | os.PathLike, required: tuple[str, ...] = ()
                    ) -> tuple[list[dict], int, bool]:
  """(objects, lines dropped, whether the file ends with a newline) of a JSON-lines journal.

  A line that is not a JSON object holding the ``required`` keys (the torn last line of a
  killed writer) is dropped and counted; blank lines are skipped.
  """
  with open(path, "rb") as f:
    data = f.read()
  objects, dropped = [], 0
  for line in data.split(b"\n"):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except ValueError:
      obj = None
    if isinstance(obj, dict) and all(key in obj for key in required):
      objects.append(obj)
    else:
      dropped += 1
  return objects, dropped, not data or data.endswith(b"\n")
