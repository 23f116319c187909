"""``OUTPUT/manifest.jsonl``: one JSON record per frame or image, the run's memory for resuming.

Record keys: ``source`` (absolute path), ``frame`` (frame index; null for images), ``status``
(``ok``, ``no_face`` or ``error: <reason>``), ``output`` (the PNG, relative to the output
folder; null unless ok), ``faces`` (faces seen), ``box`` (left, top, right, bottom of the face
used, source pixels, HOG units; see ``detect``), ``landmarks`` (68 x (x, y), source pixels,
as refined on the aligned face; see ``aligner.Aligner._locate``), ``affine`` (2x3 source ->
output matrix; in videos from the time-smoothed pose), ``eye`` (left-eye centre of
``landmarks``), ``kind``,
``detector``, ``search``, ``track`` (videos), ``image_size`` (source width, height),
``frames_total`` (frame count the video's header reports), ``quality`` (ok records: the
reasons to doubt the landmark fit, empty when plausible; see ``quality``), ``note`` (why a
face that was found is not used), ``warning``, ``settings`` (the options that shape the outputs).

Only the main process writes it: all the records of one source are appended in one write once
its PNGs are on disk, so a source is either wholly in the manifest or not at all. A torn last
line (a killed run) is dropped when the manifest is next opened. Every file is written through
a temporary name and renamed (``agg_jax.fileio``).

Workers that cannot reach the main process (an Apache Beam pipeline, ``preprocess.beam``) write
their sources' records to ``OUTPUT/manifest.parts/*.jsonl`` instead, one line per source
(``{"source": ..., "records": [...]}``, the last line of a source wins: a retried bundle
rewrites it); opening the manifest folds the parts in and removes them, so whatever a killed
pipeline finished is kept.
"""

import glob
import json
import os
from collections import defaultdict

from agg_jax import fileio

MANIFEST = "manifest.jsonl"
PARTS = "manifest.parts"


class Manifest:
  """The records already in ``out_dir/manifest.jsonl``, grouped by source, and appending."""

  def __init__(self, out_dir: str):
    self.path = os.path.join(out_dir, MANIFEST)
    self.out_dir = out_dir
    self.by_source: dict[str, list[dict]] = defaultdict(list)
    self.dropped_lines = 0
    if os.path.exists(self.path):
      records, self.dropped_lines, terminated = fileio.read_json_lines(self.path, ("source",))
      for record in records:
        self.by_source[record["source"]].append(record)
      if self.dropped_lines or not terminated:
        self._rewrite()
    self._absorb_parts()

  def done(self, source: str, settings: dict, retry_errors: bool = False) -> bool:
    """Whether ``source`` is complete in the manifest: recorded, and every ok record's PNG
    exists (and, with ``retry_errors``, no record is an error).

    Raises ValueError when it was processed with other settings (a different output is needed).
    """
    records = self.by_source.get(source)
    if not records:
      return False
    old = records[0].get("settings")
    if old != settings:
      raise ValueError(f"{self.path} holds {source} made with settings {old}, not {settings}; "
                       "use another --output folder or the same options")
    for r in records:
      if r["status"] == "ok" and not os.path.exists(os.path.join(self.out_dir, r["output"])):
        return False
      if retry_errors and r["status"].startswith("error"):
        return False
    return True

  def forget(self, sources: set[str]) -> None:
    """Drops the records of ``sources`` (to be redone), rewriting the file atomically."""
    sources = sources & self.by_source.keys()
    if sources:
      for s in sources:
        del self.by_source[s]
      self._rewrite()

  def append(self, records: list[dict]) -> None:
    """Appends one source's records in one write."""
    if not records:
      return
    fileio.append_durably(self.path, "".join(json.dumps(r, separators=(",", ":")) + "\n"
                                             for r in records))
    for r in records:
      self.by_source[r["source"]].append(r)

  def _absorb_parts(self) -> None:
    """Folds ``PARTS/*.jsonl`` into the manifest (their sources' records replace older ones),
    then deletes them."""
    parts = sorted(glob.glob(os.path.join(self.out_dir, PARTS, "*.jsonl")))
    if not parts:
      return
    for part in parts:
      entries, dropped, _ = fileio.read_json_lines(part, ("source", "records"))
      self.dropped_lines += dropped
      for entry in entries:
        self.by_source[entry["source"]] = list(entry["records"])
    self._rewrite()
    for part in parts:
      os.remove(part)

  def _rewrite(self) -> None:
    data = "".join(json.dumps(r, separators=(",", ":")) + "\n"
                   for records in self.by_source.values() for r in records)
    fileio.atomic_write_bytes(self.path, data.encode("utf-8"))


def append_part(path: str, source: str, records: list[dict]) -> None:
  """Appends one source's records to a worker's part file (see the module docstring)."""
  fileio.append_durably(path, json.dumps({"source": source, "records": records},
                                         separators=(",", ":")) + "\n")


def read_records(out_dir: str) -> list[dict]:
  """All records of ``out_dir/manifest.jsonl`` in file order."""
  with open(os.path.join(out_dir, MANIFEST), encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
