"""Running many sources: resume from the manifest, worker processes, progress bar, summary.

A source is the unit of work (a photo, or a video's sampled frames). With ``workers`` > 1 the
sources go to spawned worker processes, each loading the dlib models once. A worker that dies
(a decoder fault in a native library) takes no one else down: the sources it may have been
holding are rerun one at a time in fresh workers, and the one that kills its worker again gets
an error record. Already-finished sources are skipped (see ``Manifest.done``).
"""

import collections
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import cv2
from tqdm import tqdm

from agg_jax import cli
from agg_jax.preprocess import dlib_models
from agg_jax.preprocess.aligner import AlignedFace
from agg_jax.preprocess.manifest import Manifest
from agg_jax.preprocess.pipeline import Processor, Settings, make_record
from agg_jax.preprocess.sources import Source, discover


class UsageProblem(cli.UsageError):
  """The run cannot start (missing input, unwritable output, ...); the message says why."""


@dataclass
class Summary:
  sources: int = 0  # Sources found.
  skipped_done: int = 0  # Already complete in the manifest.
  skipped_other: int = 0  # Folder files with other extensions.
  ok: int = 0
  no_face: int = 0
  errors: int = 0
  seconds: float = 0.0
  manifest: str = ""
  error_examples: list = field(default_factory=list)  # (file, reason), one per error record.

  @property
  def frames(self) -> int:
    return self.ok + self.no_face + self.errors

  def count(self, source_path: str, records: list[dict]) -> None:
    """Adds one source's records to the counts."""
    for r in records:
      if r["status"] == "ok":
        self.ok += 1
      elif r["status"] == "no_face":
        self.no_face += 1
      else:
        self.errors += 1
        if len(self.error_examples) < 1000:
          self.error_examples.append((source_path, r["status"][len("error: "):]))

  def text(self) -> str:
    rate = self.frames / self.seconds if self.seconds > 0 else 0.0
    lines = [
        f"{self.sources} files found, {self.skipped_done} already done, "
        f"{self.skipped_other} other files skipped",
        f"{self.frames} frames/images processed in {self.seconds:.1f} s ({rate:.1f}/s): "
        f"{self.ok} ok, {self.no_face} no face, {self.errors} errors",
    ]
    groups = collections.Counter(self.error_examples)  # (file, reason) -> frames.
    for (path, reason), count in list(groups.items())[:10]:
      lines.append(f"  error: {path}: {reason}" + (f" ({count} frames)" if count > 1 else ""))
    if len(groups) > 10:
      lines.append("  ... and more: see the manifest")
    lines.append(f"manifest: {self.manifest}")
    return "\n".join(lines)


def check_output(out_dir: str) -> None:
  """Raises UsageProblem unless ``out_dir`` is (or can be made) a writable folder."""
  try:
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=out_dir):
      pass
  except OSError as e:
    raise UsageProblem(f"cannot write to output folder {out_dir}: {e.strerror or e}") from None


def plan(inputs: list[str], out_dir: str, settings: Settings, retry_errors: bool = False
         ) -> tuple[Manifest, list[Source], Summary]:
  """(manifest, sources still to do, summary so far) of a run; the records of the sources to
  redo are dropped from the manifest. Raises UsageProblem when the run cannot start; the output
  folder is made only once the inputs and the landmark model are found."""
  try:
    sources, skipped_other = discover(inputs, out_dir)
    dlib_models.find_model(dlib_models.LANDMARKS_68)
  except (FileNotFoundError, ValueError) as e:
    raise UsageProblem(str(e)) from None
  check_output(out_dir)
  try:
    manifest = Manifest(out_dir)
    todo = [s for s in sources if not manifest.done(s.path, settings.key(), retry_errors)]
  except (FileNotFoundError, ValueError) as e:
    raise UsageProblem(str(e)) from None
  manifest.forget({s.path for s in todo})
  summary = Summary(sources=len(sources), skipped_done=len(sources) - len(todo),
                    skipped_other=skipped_other, manifest=manifest.path)
  return manifest, todo, summary


class Progress:
  """A run's progress bar: frames (a video counts as its sampled frames until its records say
  otherwise), files done, ok / no face / errors; counts go into ``summary``."""

  def __init__(self, todo: list[Source], settings: Settings, summary: Summary,
               enabled: bool = True, file=None):
    self.expected = {s.path: settings.frames if s.kind == "video" else 1 for s in todo}
    self.summary = summary
    self.files = 0
    self.bar = tqdm(total=sum(self.expected.values()), unit="frame", desc="aligning",
                    smoothing=0.1, dynamic_ncols=True, disable=not enabled or not todo,
                    file=file)

  def add(self, source_path: str, records: list[dict]) -> None:
    self.files += 1
    self.summary.count(source_path, records)
    expected = self.expected.get(source_path, len(records))
    if len(records) != expected:
      self.bar.total += len(records) - expected
    self.bar.update(len(records))
    s = self.summary
    self.bar.set_postfix_str(f"files {self.files}/{len(self.expected)}, ok {s.ok}, no face "
                             f"{s.no_face}, errors {s.errors}", refresh=False)

  def close(self) -> None:
    self.bar.close()


def run(inputs: list[str], out_dir: str, settings: Settings = Settings(), workers: int = 1,
        retry_errors: bool = False, progress: bool = True) -> Summary:
  """Processes every source under ``inputs`` into ``out_dir``; returns the summary."""
  start = time.time()
  manifest, todo, summary = plan(inputs, out_dir, settings, retry_errors)
  bar = Progress(todo, settings, summary, enabled=progress)
  try:
    for source, records in _execute(todo, settings, out_dir, workers):
      manifest.append(records)
      bar.add(source.path, records)
  finally:
    bar.close()
  summary.seconds = time.time() - start
  return summary


_PROCESSOR = None
MAX_CRASHES_IN_A_ROW = 3


def _init_worker(settings: Settings, out_dir: str) -> None:
  global _PROCESSOR  # pylint: disable=global-statement
  cv2.setNumThreads(1)
  _PROCESSOR = Processor(settings, out_dir)


def _work(source: Source) -> list[dict]:
  return _PROCESSOR(source)


def _execute(todo: list[Source], settings: Settings, out_dir: str, workers: int):
  """Yields (source, records) for every source, in completion order."""
  if workers <= 1 or len(todo) <= 1:
    processor = Processor(settings, out_dir)
    for source in todo:
      yield source, processor(source)
    return
  context = multiprocessing.get_context("spawn")
  pool_args = dict(mp_context=context, initializer=_init_worker, initargs=(settings, out_dir))
  queue = collections.deque(todo)
  while queue:
    suspects = []
    with ProcessPoolExecutor(max_workers=workers, **pool_args) as pool:
      pending = {}
      try:
        while queue or pending:
          while queue and len(pending) < 2 * workers:
            source = queue.popleft()
            pending[pool.submit(_work, source)] = source
          finished, _ = wait(pending, return_when=FIRST_COMPLETED)
          for future in finished:
            source = pending[future]
            try:
              records = future.result()
            except BrokenProcessPool:
              raise
            except Exception as e:  # pylint: disable=broad-except
              records = [make_record(source, settings, AlignedFace(
                  f"error: unexpected {type(e).__name__}: {e}"))]
            del pending[future]
            yield source, records
      except BrokenProcessPool:
        suspects = list(pending.values())
    crashes = 0
    for source in suspects:  # One at a time, so a crash points at its cause.
      with ProcessPoolExecutor(max_workers=1, **pool_args) as alone:
        try:
          records = alone.submit(_work, source).result()
          crashes = 0
        except BrokenProcessPool:
          crashes += 1
          if crashes >= MAX_CRASHES_IN_A_ROW:
            raise RuntimeError(
                f"worker processes died on {crashes} files in a row (last: {source.path}); they "
                "cannot run here (out of memory? a broken install?). Try --workers=1 to see "
                "the error") from None
          records = [make_record(source, settings, AlignedFace(
              "error: the worker process died while processing this file "
              "(a crash in a native decoder or in dlib)"))]
      yield source, records


def print_summary(summary: Summary) -> None:
  print(summary.text(), file=sys.stderr)
