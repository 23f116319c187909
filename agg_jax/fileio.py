"""Atomic file writes: a reader (or a rerun after a crash) never sees half a file."""

import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
  """Calls `write(f)` on a temporary file beside `path`, then renames it to `path`."""
  path = os.fspath(path)
  handle, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
  os.chmod(tmp, 0o644)
  try:
    with os.fdopen(handle, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write(path, lambda f: f.write(text.encode()))
