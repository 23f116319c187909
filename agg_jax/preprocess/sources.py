"""Finding the inputs: files and folders (recursive), videos and images mixed, and where each
one's aligned faces go so that the output mirrors the input tree.

Folders contribute the files whose extension is a known image or video one (hidden files and
folders and the output folder are skipped; other files are counted, not processed). Files named
explicitly are always processed. The kind is taken from the content (magic bytes) when it is
recognised and from the extension otherwise; a file whose content contradicts its extension is
processed by its content, with a warning in its manifest records.

Outputs are relative to the inputs' common folder: ``a/b/photo.jpg`` -> ``a/b/photo.png``,
``a/b/clip.mp4`` -> ``a/b/clip/000000.png`` (one PNG per frame index). Sources in one folder
that share a stem (``x.jpg`` and ``x.png``) keep their extension in the name (``x_jpg.png``).
"""

import collections
import os
from dataclasses import dataclass
from pathlib import Path

from agg_jax.preprocess.frames import VIDEO_EXTS
from agg_jax.preprocess.images import IMAGE_EXTS


@dataclass(frozen=True)
class Source:
  path: str  # Absolute path.
  output: str  # Output path without extension, relative to the output folder, "/"-separated.
  kind: str  # "image" or "video".
  warning: str | None = None


def sniff(path: str | os.PathLike) -> str | None:
  """"image", "video" or None (not recognised) from the file's first bytes."""
  with open(path, "rb") as f:
    head = f.read(16)
  if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM",
                      b"II*\x00", b"MM\x00*")):
    return "image"
  if head[:4] == b"RIFF":
    return {b"WEBP": "image", b"AVI ": "video"}.get(head[8:12])
  if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free") or head.startswith(
      (b"\x1a\x45\xdf\xa3", b"FLV", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3",
       b"\x30\x26\xb2\x75")):
    return "video"
  return None


def kind_of(path: str | os.PathLike) -> tuple[str, str | None]:
  """(kind, warning): the kind to process the file as, and why it differs from its extension.

  An unrecognised file with an unknown extension is returned as an "image", whose decoder then
  reports what is wrong with it.
  """
  ext = Path(path).suffix.lower()
  by_ext = "video" if ext in VIDEO_EXTS else "image" if ext in IMAGE_EXTS else None
  try:
    by_content = sniff(path) if os.path.getsize(path) else None
  except OSError:
    by_content = None
  if by_content and by_ext and by_content != by_ext:
    return by_content, f"extension {ext} says {by_ext} but the content is {by_content}"
  return by_content or by_ext or "image", None


def discover(inputs: list[str], out_dir: str) -> tuple[list[Source], int]:
  """Sources under ``inputs`` (sorted) and the number of folder files skipped for their
  extension. Raises FileNotFoundError naming an input that does not exist."""
  out_dir = os.path.realpath(out_dir)
  roots, files = [], []
  for item in inputs:
    if not os.path.exists(item):
      raise FileNotFoundError(f"input {item} does not exist")
    path = os.path.abspath(item)
    if os.path.isdir(path):
      roots.append(path)
      files.extend(_walk(path, out_dir))
    else:
      roots.append(os.path.dirname(path))
      files.append((path, True))
  skipped = sum(1 for _, keep in files if not keep)
  paths = sorted({p for p, keep in files if keep})
  base = os.path.commonpath(roots) if roots else "/"
  stems = collections.Counter(os.path.splitext(p)[0] for p in paths)
  sources = []
  for p in paths:
    stem, ext = os.path.splitext(p)
    out = stem if stems[stem] == 1 else stem + "_" + ext.lstrip(".")
    kind, warning = kind_of(p)
    sources.append(Source(p, Path(os.path.relpath(out, base)).as_posix(), kind, warning))
  return sources, skipped


def _walk(root: str, out_dir: str):
  """(path, keep) for every file under ``root``; keep is False for non-image/video extensions."""
  for folder, dirs, names in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                     and os.path.realpath(os.path.join(folder, d)) != out_dir)
    for name in sorted(names):
      if name.startswith("."):
        continue
      ext = os.path.splitext(name)[1].lower()
      yield os.path.join(folder, name), ext in IMAGE_EXTS or ext in VIDEO_EXTS
