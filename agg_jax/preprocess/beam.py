"""The preprocessing as an Apache Beam pipeline, for more videos than one machine can take.

  python -m agg_jax.preprocess --input=... --output=DIR --beam [--beam_options="--runner=..."]

The same ``pipeline.Processor`` runs on every source, so a Beam run's PNGs and records equal a
local run's. Planning (finding the inputs, skipping what the manifest holds) happens here, on
the launching machine; the sources are spread over Beam workers (``Reshuffle``), each loading
the dlib models once (``DoFn.setup``). Workers write the PNGs into DIR themselves and their
records to ``DIR/manifest.parts/``, which the launcher folds into ``DIR/manifest.jsonl`` at the
end (``manifest.Manifest``): a killed pipeline keeps what it finished, and a rerun resumes.
DIR must therefore be one folder that the launcher and every worker see (a local disk for the
DirectRunner; a shared mount such as NFS or a gcsfuse bucket for a cluster runner, whose workers
also need agg_jax installed). Counters ``ok``, ``no_face`` and ``errors`` (namespace
``agg_jax.preprocess``) show progress in the runner's monitoring.

Default options: Beam's local FnApiRunner (what the DirectRunner runs a batch pipeline on, without
its attempt to download the Prism runner first) with ``workers`` processes
(``multi_processing``; one worker runs ``in_memory``). Beam's own logging, its workers' included,
goes to ``DIR/beam.log`` (the launcher's standard error is pointed there while the pipeline
runs); the console shows the progress bar, fed from the parts as they grow, and the closing
summary, as a local run does.
apache-beam is optional: ``pip install 'agg_jax[beam]'``.
"""

import contextlib
import glob
import json
import logging
import os
import shlex
import sys
import threading
import time
import uuid

from agg_jax.preprocess import manifest as manifest_lib
from agg_jax.preprocess.pipeline import Processor, Settings
from agg_jax.preprocess.runner import Progress, Summary, UsageProblem, plan
from agg_jax.preprocess.sources import Source

NAMESPACE = "agg_jax.preprocess"
LOG = "beam.log"


def import_beam():
  """apache_beam, or UsageProblem saying how to install it."""
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.ERROR)  # Import-time notices about absent Google Cloud clients.
  try:
    import apache_beam  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise UsageProblem(f"--beam needs apache-beam ({e}): pip install 'agg_jax[beam]'") from None
  finally:
    root.setLevel(level)
  return apache_beam


@contextlib.contextmanager
def _stderr_to(path: str):
  """Points file descriptor 2 (this process's and its children's standard error) at ``path``
  (appending) for the duration; yields a text stream to the real standard error."""
  sys.stderr.flush()
  saved = os.dup(2)
  with open(path, "ab") as f:
    os.dup2(f.fileno(), 2)
  console = os.fdopen(os.dup(saved), "w")
  try:
    yield console
  finally:
    console.close()
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


class _PartsWatcher(threading.Thread):
  """Feeds ``progress`` with the sources that appear in the workers' manifest parts."""

  def __init__(self, out_dir: str, progress: Progress, every: float = 0.5):
    super().__init__(daemon=True)
    self.pattern = os.path.join(out_dir, manifest_lib.PARTS, "*.jsonl")
    self.progress = progress
    self.every = every
    self.offsets: dict[str, int] = {}
    self.stopped = threading.Event()

  def poll(self) -> None:
    for part in sorted(glob.glob(self.pattern)):
      offset = self.offsets.get(part, 0)
      with open(part, "rb") as f:
        f.seek(offset)
        data = f.read()
      end = data.rfind(b"\n") + 1  # Whole lines only; a line being written waits.
      self.offsets[part] = offset + end
      for line in data[:end].splitlines():
        try:
          entry = json.loads(line)
          self.progress.add(entry["source"], entry["records"])
        except (ValueError, KeyError, TypeError):
          pass  # The manifest reports torn lines when it folds the parts in.

  def run(self) -> None:
    while not self.stopped.wait(self.every):
      self.poll()

  def stop(self) -> None:
    self.stopped.set()
    self.join()
    self.poll()


def default_options(workers: int) -> list[str]:
  """Local runner options for ``workers`` processes."""
  mode = "multi_processing" if workers > 1 else "in_memory"
  return ["--runner=FnApiRunner", f"--direct_num_workers={workers}",
          f"--direct_running_mode={mode}"]


def make_align_fn(beam):
  """The DoFn class (defined once Beam is imported): one source -> PNGs and a part record."""

  class AlignSource(beam.DoFn):
    """Processes sources with one ``Processor`` per worker; yields nothing (the records go to
    the worker's manifest part)."""

    def __init__(self, settings: Settings, out_dir: str):
      super().__init__()
      self.settings = settings
      self.out_dir = out_dir
      self.counters = {name: beam.metrics.Metrics.counter(NAMESPACE, name)
                       for name in ("ok", "no_face", "errors")}

    def setup(self):
      import cv2  # pylint: disable=import-outside-toplevel
      cv2.setNumThreads(1)
      self.processor = Processor(self.settings, self.out_dir)
      self.part = os.path.join(self.out_dir, manifest_lib.PARTS, f"{uuid.uuid4().hex}.jsonl")

    def process(self, source: Source):
      records = self.processor(source)
      manifest_lib.append_part(self.part, source.path, records)
      for r in records:
        status = r["status"]
        self.counters["ok" if status == "ok" else "no_face" if status == "no_face"
                      else "errors"].inc()
      return []

  return AlignSource


def run(inputs: list[str], out_dir: str, settings: Settings = Settings(), workers: int = 1,
        retry_errors: bool = False, options: str | list[str] | None = None,
        progress: bool = True) -> Summary:
  """Processes every source under ``inputs`` into ``out_dir`` with a Beam pipeline.

  ``options``: Beam pipeline options (a command-line string or list), by default
  ``default_options(workers)``.
  """
  start = time.time()
  beam = import_beam()
  _, todo, summary = plan(inputs, out_dir, settings, retry_errors)
  if todo:
    if isinstance(options, str):
      options = shlex.split(options)
    pipeline_options = beam.options.pipeline_options.PipelineOptions(
        options or default_options(workers))
    log = os.path.join(out_dir, LOG)
    try:
      with _stderr_to(log) as console:
        bar = Progress(todo, settings, Summary(), enabled=progress, file=console)
        watcher = _PartsWatcher(out_dir, bar)
        watcher.start()
        try:
          with beam.Pipeline(options=pipeline_options) as p:
            _ = (p
                 | "Sources" >> beam.Create(todo)
                 | "Spread" >> beam.Reshuffle()
                 | "Align" >> beam.ParDo(make_align_fn(beam)(settings,
                                                             os.path.abspath(out_dir))))
        finally:
          watcher.stop()
          bar.close()
    except Exception as e:
      raise RuntimeError(f"the Beam pipeline failed ({type(e).__name__}: {e}); its log is "
                         f"{log}; rerun to resume") from e
  done = manifest_lib.Manifest(out_dir)  # Folds the workers' parts in.
  for source in todo:
    summary.count(source.path, done.by_source.get(source.path, []))
  missing = [s.path for s in todo if s.path not in done.by_source]
  if missing:
    raise RuntimeError(f"the pipeline finished without records for {len(missing)} sources "
                       f"(first: {missing[0]}); rerun to process them")
  summary.seconds = time.time() - start
  return summary
