"""Files of a run, on a local disk or on object storage (`gs://bucket/...`), written crash-safe.

Every path of a run goes through `path()`: an `etils.epath.Path`, which reads and writes local
folders through `os` and `gs://` (or `s3://`) locations through fsspec's gcsfs, the same path
layer orbax and TFDS use. A reader (or a rerun after a crash) never sees half a file: a local
file is written beside its target and renamed; an object on a bucket appears only when its upload
is complete. An appended line is durable before the call returns.
"""

import io
import json
import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO

from etils import epath

PathLike = str | os.PathLike


def is_local(location: PathLike) -> bool:
  """Whether `location` is on this machine's file system (not `scheme://...`)."""
  return "://" not in os.fspath(location)


def path(location: PathLike) -> epath.Path:
  """The `epath.Path` of a local path (`~` expanded) or of a `gs://...` location."""
  location = os.fspath(location)
  return epath.Path(os.path.expanduser(location) if is_local(location) else location)


def absolute(location: PathLike) -> epath.Path:
  """`path(location)`, made absolute when local (orbax wants absolute checkpoint folders)."""
  found = path(location)
  return epath.Path(os.path.abspath(found)) if is_local(location) else found


def atomic_write(location: PathLike, write: Callable[[BinaryIO], None]) -> None:
  """Calls `write(f)` on a temporary file beside a local `location`, then renames it there; on
  object storage, uploads what `write` wrote in one request. The folder is created if needed."""
  if not is_local(location):
    buffer = io.BytesIO()
    write(buffer)
    path(location).write_bytes(buffer.getvalue())
    return
  location = os.fspath(path(location))
  folder = os.path.dirname(location) or "."
  os.makedirs(folder, exist_ok=True)
  handle, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
  os.chmod(tmp, 0o644)
  try:
    with os.fdopen(handle, "wb") as f:
      write(f)
    os.replace(tmp, location)
  except BaseException:
    os.unlink(tmp)
    raise


def atomic_write_bytes(location: PathLike, data: bytes) -> None:
  atomic_write(location, lambda f: f.write(data))


def atomic_write_text(location: PathLike, text: str) -> None:
  atomic_write_bytes(location, text.encode("utf-8"))


def append_durably(location: PathLike, text: str) -> None:
  """Appends ``text`` to ``location`` in one write and waits until it is on disk (journals such
  as JSON-lines manifests; a reader drops a torn last line). The folder is created if needed.

  Objects on a bucket cannot be appended to: the object is rewritten with the text added (the
  journals of a run are small), and is never seen half-written.
  """
  if not is_local(location):
    target = path(location)
    old = target.read_bytes() if target.exists() else b""
    target.write_bytes(old + text.encode("utf-8"))
    return
  location = os.fspath(path(location))
  os.makedirs(os.path.dirname(location) or ".", exist_ok=True)
  with open(location, "a", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def read_json_lines(location: PathLike, required: tuple[str, ...] = ()
                    ) -> tuple[list[dict], int, bool]:
  """(objects, lines dropped, whether the file ends with a newline) of a JSON-lines journal.

  A line that is not a JSON object holding the ``required`` keys (the torn last line of a
  killed writer) is dropped and counted; blank lines are skipped.
  """
  data = path(location).read_bytes()
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
