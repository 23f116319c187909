"""The data source of prepared face datasets ("tfds"): ArrayRecord files read by random access.

A dataset is prepared once by its builder (`python -m agg_jax.datasets build NAME ...`) and read
here through `tfds.builder_from_directory(...).as_data_source(split)` without its builder code
and without TensorFlow. Split names carry the label and method (`agg_jax.datasets.faces`), so a
split's labels and methods are known from the dataset's info alone: nothing is read until a
batch asks for its rows, and memory follows the batch, not the dataset.

Config fields (`config.data`):
  source="tfds"
  data_dir       where the datasets were prepared (the build command's --data_dir)
  dataset        "builder/config" (or "builder"), the default dataset of the sets below
  train_set      the forgery method trained on: "method" or "builder/config:method"
  train_mix      () or ((method, weight), ...): several methods of the dataset mixed in the
                 fake half of each batch in proportion to their weights (train_set then names
                 the mix in the results)
  test_sets      the test sets, each "method", "builder/config:method" or "name=...:method"
  real           real sources of training and validation (() for all of the dataset's)
  test_real      real sources of the test sets (() for all)
  image_size     the side the faces are resized to when read (the stored side: no resizing)

Each set holds the real faces of its dataset and partition (train, validation or test) with the
fakes of its method. A test set's ids and video ids are read from its records when it is first
used (evaluation), never while training.
"""

import collections
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping

import cv2
import ml_collections
import numpy as np

from agg_jax import datasets as face_datasets
from agg_jax.config_validation import ConfigError, require, require_fields
from agg_jax.data.split import FAKE, REAL, Dataset, Split
from agg_jax.datasets import faces

FIELDS = ("data_dir", "dataset", "train_set", "train_mix", "test_sets", "real", "test_real",
          "image_size")


@dataclasses.dataclass(frozen=True)
class SetSpec:
  """One named set: the fakes of `method` in `dataset` ("builder/config"), with its reals."""
  name: str
  dataset: str
  method: str


def parse_set(entry: str, default_dataset: str, key: str) -> SetSpec:
  """`method`, `builder/config:method` or `name=builder/config:method` as a SetSpec."""
  require(isinstance(entry, str) and entry.strip(), key, entry,
          "must be 'method', 'builder/config:method' or 'name=builder/config:method'")
  name, _, rest = entry.rpartition("=")
  dataset, _, method = rest.rpartition(":")
  method = faces.slug(method)
  if not name:  # the method; with a dataset, its config and the method (once if it ends so)
    config = dataset.partition("/")[2] or dataset
    name = (method if not dataset else config if config.endswith(method)
            else f"{config}_{method}")
  return SetSpec(name, dataset or default_dataset, method)


class Prepared:
  """One prepared dataset: its info (splits, sizes, metadata), and its splits' records."""

  def __init__(self, data_dir: str, dataset: str):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    name, _, config = dataset.partition("/")
    folder = face_datasets.prepared_dir(data_dir, name, config or None)
    if folder is None:
      raise ConfigError(
          f"config.data: dataset {dataset} is not prepared in {data_dir}; build it with "
          f"`{face_datasets.build_command(name, config or None, data_dir)}`")
    self.dataset = dataset
    self.folder = str(folder)
    self.builder = tfds.builder_from_directory(self.folder)
    self.sizes = {s: info.num_examples for s, info in self.builder.info.splits.items()}
    self.image_side = int(self.builder.info.metadata["alignment"]["size"])  # as stored

  def groups(self, partition: str, label: str) -> list[str]:
    """The methods (fake) or sources (real) that have a split in `partition`."""
    return sorted(group for p, l, group in filter(None, map(faces.parse_split_name, self.sizes))
                  if p == partition and l == label)

  def split(self, partition: str, label: str, group: str) -> str:
    name = faces.split_name(partition, label, group)
    if name not in self.sizes:
      have = ", ".join(self.groups(partition, label)) or "none"
      raise ConfigError(f"config.data: {self.dataset} has no {label} {group!r} in its "
                        f"{partition} partition (it has: {have}; in {self.folder})")
    return name


@dataclasses.dataclass(frozen=True)
class Segment:
  folder: str  # a prepared dataset's version folder
  split: str  # a split of it
  size: int


class RecordImages:
  """The faces of several prepared splits, one after the other, read by random access and
  resized to `side` (INTER_AREA) where it differs from the stored side.

  Picklable: each process opens the record files on first read (grain's worker processes).
  """

  def __init__(self, segments: list[Segment], side: int):
    self.segments = segments
    self.side = side
    self.offsets = np.cumsum([0] + [s.size for s in segments])
    self._sources = None

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self.side, self.side, 3)

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def __getstate__(self):
    return {**self.__dict__, "_sources": None}

  def _open(self) -> list:
    if self._sources is None:  # several threads may open at once: each sees a whole list
      import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
      builders, sources = {}, []
      for segment in self.segments:
        if segment.folder not in builders:
          builders[segment.folder] = tfds.builder_from_directory(segment.folder)
        sources.append(builders[segment.folder].as_data_source(segment.split))
      self._sources = sources
    return self._sources

  def records(self, indices: np.ndarray) -> list[dict]:
    """The examples at `indices` (features as stored: the image as PNG bytes)."""
    indices = np.asarray(indices, np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
      raise IndexError(f"indices outside [0, {len(self)})")
    sources = self._open()
    which = np.searchsorted(self.offsets, indices, side="right") - 1
    out = [None] * len(indices)
    for segment in np.unique(which):
      rows = np.flatnonzero(which == segment)
      local = (indices[rows] - self.offsets[segment]).tolist()
      for row, record in zip(rows, sources[segment].__getitems__(local)):
        out[row] = record
    return out

  def read(self, indices: np.ndarray) -> np.ndarray:
    images = np.empty((len(indices), *self.shape), np.uint8)
    for i, record in enumerate(self.records(indices)):
      face = faces.decode_png(record["image"])
      if face.shape[0] != self.side:
        face = cv2.resize(face, (self.side, self.side), interpolation=cv2.INTER_AREA)
      images[i] = face
    return images


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _split(images: RecordImages, labels: list[int], methods: list[str], scan: bool) -> Split:
  """A Split over `images`; `scan` reads every record's ids and video ids (test sets)."""
  counts = [s.size for s in images.segments]
  labels = np.repeat(np.asarray(labels, np.int32), counts)
  methods = np.repeat(np.asarray(methods), counts)
  if not scan:
    ids = np.asarray([f"{s.split}#{i}" for s in images.segments for i in range(s.size)])
    return Split(images, labels, ids, methods=methods)
  ids, video_ids, has_videos = [], [], False
  chunk = 256
  for start in range(0, len(images), chunk):
    for record in images.records(np.arange(start, min(start + chunk, len(images)))):
      path, video = _text(record["path"]), _text(record["video_id"])
      ids.append(f"{path}#{int(record['frame'])}" if video else path)
      video_ids.append(video or path)  # a photo among videos is a video of one frame
      has_videos = has_videos or bool(video)
  return Split(images, labels, np.asarray(ids), np.asarray(video_ids) if has_videos else None,
               methods)


class LazySplits(Mapping):
  """Named test sets, each made (and its records' ids read) on first access."""

  def __init__(self, makers: dict[str, Callable[[], Split]]):
    self._makers = makers
    self._made = {}

  def __getitem__(self, name: str) -> Split:
    if name not in self._made:
      self._made[name] = self._makers[name]()
    return self._made[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self._makers)

  def __len__(self) -> int:
    return len(self._makers)


class _Sets:
  """Builds the splits of `config.data`, opening each prepared dataset once."""

  def __init__(self, data: ml_collections.ConfigDict):
    self.data = data
    self.side = int(data.image_size)
    self._prepared = {}

  def prepared(self, dataset: str) -> Prepared:
    if dataset not in self._prepared:
      self._prepared[dataset] = Prepared(os.path.expanduser(self.data.data_dir), dataset)
    return self._prepared[dataset]

  def segments(self, dataset: str, partition: str, methods: list[str], real: tuple
               ) -> tuple[list[Segment], list[int], list[str]]:
    """The segments of a set: its real splits, then its fake ones; their labels and methods."""
    prepared = self.prepared(dataset)
    sources = list(real) or prepared.groups(partition, "real")
    if not sources:
      raise ConfigError(f"config.data: {dataset} has no real faces in its {partition} partition")
    parts = [(prepared.split(partition, "real", s), REAL, "real") for s in sources]
    parts += [(prepared.split(partition, "fake", m), FAKE, m) for m in methods]
    return ([Segment(prepared.folder, split, prepared.sizes[split]) for split, _, _ in parts],
            [label for _, label, _ in parts], [method for _, _, method in parts])

  def split(self, dataset: str, partition: str, methods: list[str], real: tuple,
            scan: bool = False) -> Split:
    segments, labels, methods = self.segments(dataset, partition, methods, real)
    images = RecordImages(segments, self.side)
    return _split(images, labels, methods, scan)


def _train(data) -> tuple[SetSpec, list[str], dict[str, float]]:
  train = parse_set(data.train_set, data.dataset, "data.train_set")
  weights = {faces.slug(m): float(w) for m, w in data.train_mix} or {train.method: 1.0}
  return train, list(weights), weights


def check(data: ml_collections.ConfigDict) -> None:
  require_fields(data, "data", FIELDS, "the tfds source")
  require(isinstance(data.image_size, int) and data.image_size >= 32 and data.image_size % 16 == 0,
          "data.image_size", data.image_size, "must be a multiple of 16, at least 32")
  require(isinstance(data.dataset, str) and data.dataset, "data.dataset", data.dataset,
          "must name a prepared dataset, 'builder/config'")
  for key in ("real", "test_real", "test_sets", "train_mix"):
    require(isinstance(data[key], (tuple, list)), f"data.{key}", data[key], "must be a tuple")
  require(len(data.test_sets) > 0, "data.test_sets", data.test_sets, "must name a test set")
  for pair in data.train_mix:
    require(isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[1], (int, float))
            and pair[1] > 0, "data.train_mix", data.train_mix,
            "must be ((method, weight > 0), ...)")
  train, methods, _ = _train(data)
  sets = _Sets(data)
  for partition in ("train", "validation"):
    sets.segments(train.dataset, partition, methods, tuple(data.real))
  names = collections.Counter()
  for i, entry in enumerate(data.test_sets):
    spec = parse_set(entry, data.dataset, f"data.test_sets[{i}]")
    names[spec.name] += 1
    sets.segments(spec.dataset, "test", [spec.method], tuple(data.test_real))
  twice = [n for n, c in names.items() if c > 1]
  require(not twice, "data.test_sets", data.test_sets,
          f"names {', '.join(twice)} more than once (give 'name=...' to tell them apart)")


def image_shape(data: ml_collections.ConfigDict) -> tuple[int, int, int]:
  return (int(data.image_size), int(data.image_size), 3)


def load(data: ml_collections.ConfigDict) -> Dataset:
  sets = _Sets(data)
  train, methods, weights = _train(data)
  real = tuple(data.real)
  name = train.name if not data.train_mix else "+".join(methods)
  makers = {}
  for entry in data.test_sets:
    spec = parse_set(entry, data.dataset, "data.test_sets")
    makers[spec.name] = (lambda s=spec: sets.split(s.dataset, "test", [s.method],
                                                    tuple(data.test_real), scan=True))
  return Dataset(train_set=name,
                 train=sets.split(train.dataset, "train", methods, real),
                 validation=sets.split(train.dataset, "validation", methods, real),
                 test=LazySplits(makers), train_mix=weights if data.train_mix else None)
