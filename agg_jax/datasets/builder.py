"""The base of every face dataset builder in ``datasets/``: features, settings, skips.

A builder lists the photos and videos of its manual folder as ``faces.Item`` values, each naming the
split it belongs to (``faces.split_name``), and returns ``self.face_splits(items)`` from
``_split_generators`` (on Apache Beam when the class sets ``USES_BEAM``). This base class gives
every dataset the same features, records the alignment and builder settings in the metadata, and
keeps the skips: each photo, video or frame that gave no face is written to a skip log while the
splits are generated (by whichever process or Beam worker met it), then counted and listed in the
metadata (``skipped``) when the build ends. A split whose every item was skipped cannot be
written: the build starts again without it and records it (``skipped.empty_splits``).
"""

import dataclasses
import hashlib
import json
import threading
from collections.abc import Iterator

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from agg_jax.datasets import DatasetError, faces, tfds_compat
from agg_jax.preprocess.aligner import Settings

SKIP_LOG = "skips"  # folder of the dataset being built; removed once read
LISTED_SKIPS = 1000  # skips listed one by one in the metadata (all are counted)


@dataclasses.dataclass
class FaceConfig(tfds.core.BuilderConfig):
  """Builder settings shared by every face dataset (each is recorded in the metadata).

  size, detector: of the alignment (``agg_jax.preprocess``); frames: per video (the paper: the
  first 100).
  """
  size: int = 256
  frames: int = 100
  detector: str = "hog"

  def settings(self) -> Settings:
    return Settings(size=self.size, frames=self.frames, sampling="first", detector=self.detector)


class FaceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder of aligned-face datasets (abstract: subclasses define ``_split_generators``).

  ``workers``: processes that align faces when not under Beam (set by the build command).
  """
  workers = 1
  _empty_splits = ()  # splits left out because every one of their items was skipped
  USES_BEAM = False  # True: the splits are generated on Apache Beam (``beam_face_examples``)
  CITATION = ""
  HOMEPAGE = ""

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    builder_settings = ({f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                         if f.name not in tfds.core.BuilderConfig.__dataclass_fields__}
                        if config is not None else {})
    return tfds.core.DatasetInfo(
        builder=self, description=(self.__doc__ or "").strip(), features=faces.features(),
        homepage=self.HOMEPAGE, citation=self.CITATION,
        metadata=tfds.core.MetadataDict(alignment=self.settings().key(),
                                        builder=builder_settings))

  def settings(self) -> Settings:
    config = self.builder_config
    return config.settings() if isinstance(config, FaceConfig) else Settings()

  def _skip_log(self) -> epath.Path:
    return epath.Path(self.data_dir) / SKIP_LOG

  def _generate_examples(self, **kwargs):
    raise NotImplementedError("face builders return face_splits(items) from _split_generators")

  def face_splits(self, items: list[faces.Item]) -> dict:
    """Each split's examples, for ``_split_generators`` to return (splits without items left
    out)."""
    by_split = {}
    for item in items:
      by_split.setdefault(item.split, []).append(item)
    make = self.beam_face_examples if self.USES_BEAM else self.face_examples
    return {split: make(split_items) for split, split_items in sorted(by_split.items())
            if split not in self._empty_splits}

  def face_examples(self, items: list[faces.Item]) -> Iterator[tuple[str, dict]]:
    """The examples of ``items`` (aligned in ``workers`` processes); skips go to the log."""
    log = _SkipLog(self._skip_log())
    count = 0
    for item, kept, skipped in self._aligning.map(items):
      log.write(item, skipped)
      count += len(kept)
      yield from kept
    if not count:  # TFDS cannot write an empty split: the build starts again without it
      raise _EmptySplit(items[0].split)

  def beam_face_examples(self, items: list[faces.Item]):
    """The examples of ``items`` as an Apache Beam transform (one item per element)."""
    import apache_beam as beam  # pylint: disable=import-outside-toplevel

    settings, log_dir = self.settings(), self._skip_log()

    class Align(beam.DoFn):
      def setup(self):
        self.log = _SkipLog(log_dir)

      def process(self, item):
        kept, skipped = faces.examples(_thread_aligner(settings), item)
        self.log.write(item, skipped)
        yield from kept

    return (beam.Create(items) | beam.Reshuffle() | beam.ParDo(Align()))

  def _download_and_prepare(self, dl_manager, download_config):
    tfds_compat.install()  # splits over 1 GB spill to disk without TensorFlow
    log = _SkipLog(self._skip_log())
    self._empty_splits = []
    log.clear()  # (one file per item: an item aligned again overwrites its own skips)
    with faces.Aligning(self.settings(), self.workers) as self._aligning:
      while True:
        try:
          super()._download_and_prepare(dl_manager, download_config)
          break
        except _EmptySplit as empty:  # every photo or video of it was skipped
          self._empty_splits.append(empty.split)
          logging.warning("split %s: no photo or video of it gave a face; building again "
                          "without it", empty.split)
    skipped = log.read()
    log.clear()
    by_status = {}
    for skip in skipped:
      reason = skip["status"].split(":")[0]  # "error" or "no_face"
      by_status[reason] = by_status.get(reason, 0) + 1
    self.info.metadata["skipped"] = {"count": len(skipped), "by_status": by_status,
                                     "listed": skipped[:LISTED_SKIPS],
                                     "empty_splits": self._empty_splits}


class _EmptySplit(DatasetError):
  def __init__(self, split: str):
    super().__init__(f"split {split}: no photo or video of it gave a face")
    self.split = split


_THREAD = threading.local()  # each Beam worker thread's aligners, by settings


def _thread_aligner(settings: Settings):
  """The aligner of this thread and settings: the dlib models (~70 MB, ~1 s to load) loaded once
  per worker thread, not once per split (each split has its own DoFn instance)."""
  from agg_jax.preprocess.aligner import Aligner  # pylint: disable=import-outside-toplevel
  aligners = _THREAD.__dict__.setdefault("aligners", {})
  if settings not in aligners:
    aligners[settings] = Aligner(settings)
  return aligners[settings]


class _SkipLog:
  """One small JSON file per item with skips, in a folder every worker can reach."""

  def __init__(self, folder: epath.Path):
    self.folder = folder

  def write(self, item: faces.Item, skipped: list[dict]) -> None:
    if not skipped:
      return
    self.folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha1(item.relative.encode()).hexdigest()[:20] + ".json"
    (self.folder / name).write_text(json.dumps(skipped))

  def read(self) -> list[dict]:
    if not self.folder.exists():
      return []
    records = [r for f in sorted(self.folder.iterdir()) for r in json.loads(f.read_text())]
    return sorted(records, key=lambda r: (r["path"], r["frame"]))

  def clear(self) -> None:
    if self.folder.exists():
      self.folder.rmtree()
