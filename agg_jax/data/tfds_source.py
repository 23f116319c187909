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
  crop           the central fraction of each aligned face's side that is read (1.0: all of
                 it), before resizing; e.g. 0.5 keeps the face's interior and drops the margin
                 where a tight source photo leaves black padding (optional, default 1.0)
  max_padding    faces whose crop is more than this fraction black padding (pixels black in
                 every channel, as the aligner fills outside the source picture) are left out
                 of every set; 1.0 keeps all (optional, the default). Finding them reads every
                 face of the sets once, when the data is loaded

Each set holds the real faces of its dataset and partition (train, validation or test) with the
fakes of its method. A test set's ids and video ids are read from its records when it is first
used (evaluation), never while training.
"""

import collections
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping

import ml_collections
import numpy as np

from agg_jax import datasets as face_datasets
from agg_jax import face_input
from agg_jax.config_validation import ConfigError, require, require_fields
from agg_jax.data.split import FAKE, REAL, Dataset, Split
from agg_jax.datasets import faces

FIELDS = ("data_dir", "dataset", "train_set", "train_mix", "test_sets", "real", "test_real",
          "image_size")
OPTIONAL = {"crop": 1.0, "max_padding": 1.0}  # fields that configs written before them lack


def crop_of(data: ml_collections.ConfigDict) -> float:
  return float(data.get("crop", OPTIONAL["crop"]))


def max_padding_of(data: ml_collections.ConfigDict) -> float:
  return float(data.get("max_padding", OPTIONAL["max_padding"]))


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
  rows: tuple[int, ...] | None = None  # the split's examples it holds (None: all, in order)

  def local(self, indices: list[int]) -> list[int]:
    """The split's example indices of the segment's `indices`."""
    return indices if self.rows is None else [self.rows[i] for i in indices]


class RecordImages:
  """The faces of several prepared splits, one after the other, read by random access: the
  central `crop` of each, resized to `side` (`face_input.model_input`).

  Picklable: each process opens the record files on first read (grain's worker processes).
  """

  def __init__(self, segments: list[Segment], side: int, crop: float = 1.0):
    self.segments = segments
    self.side = side
    self.crop = crop
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
      local = self.segments[segment].local((indices[rows] - self.offsets[segment]).tolist())
      for row, record in zip(rows, sources[segment].__getitems__(local)):
        out[row] = record
    return out

  def read(self, indices: np.ndarray) -> np.ndarray:
    images = np.empty((len(indices), *self.shape), np.uint8)
    for i, record in enumerate(self.records(indices)):
      images[i] = face_input.model_input(faces.decode_png(record["image"]), self.side, self.crop)
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


_KEPT = {}  # (folder, split, crop, max_padding) -> the segment of the faces kept: one scan each


class _Sets:
  """Builds the splits of `config.data`, opening each prepared dataset once."""

  def __init__(self, data: ml_collections.ConfigDict):
    self.data = data
    self.side = int(data.image_size)
    self.crop = crop_of(data)
    self.max_padding = max_padding_of(data)
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

  def kept(self, segment: Segment) -> Segment:
    """`segment` without the faces whose crop is more than `max_padding` padding."""
    if self.max_padding >= 1.0:
      return segment
    key = (segment.folder, segment.split, self.crop, self.max_padding)
    if key not in _KEPT:
      whole = RecordImages([segment], self.side, self.crop)
      padding = np.asarray([
          face_input.border_fraction(face_input.central_crop(faces.decode_png(r["image"]),
                                                             self.crop))
          for start in range(0, segment.size, 256)
          for r in whole.records(np.arange(start, min(start + 256, segment.size)))])
      rows = tuple(np.flatnonzero(padding <= self.max_padding).tolist())
      _KEPT[key] = dataclasses.replace(segment, size=len(rows), rows=rows)
      print(f"data.max_padding={self.max_padding}: {segment.size - len(rows)} of "
            f"{segment.size} faces of {segment.split} left out", flush=True)
    return _KEPT[key]

  def split(self, dataset: str, partition: str, methods: list[str], real: tuple,
            scan: bool = False) -> Split:
    segments, labels, methods = self.segments(dataset, partition, methods, real)
    images = RecordImages([self.kept(s) for s in segments], self.side, self.crop)
    return _split(images, labels, methods, scan)


def _train(data) -> tuple[SetSpec, list[str], dict[str, float]]:
  train = parse_set(data.train_set, data.dataset, "data.train_set")
  weights = {faces.slug(m): float(w) for m, w in data.train_mix} or {train.method: 1.0}
  return train, list(weights), weights


def check(data: ml_collections.ConfigDict) -> None:
  require_fields(data, "data", FIELDS, "the tfds source")
  require(isinstance(data.image_size, int) and data.image_size >= 32 and data.image_size % 16 == 0,
          "data.image_size", data.image_size, "must be a multiple of 16, at least 32")
  crop, max_padding = data.get("crop", 1.0), data.get("max_padding", 1.0)
  require(isinstance(crop, (int, float)) and not isinstance(crop, bool) and 0 < crop <= 1,
          "data.crop", crop, "must be a fraction of the face's side in (0, 1]")
  require(isinstance(max_padding, (int, float)) and not isinstance(max_padding, bool)
          and 0 <= max_padding <= 1, "data.max_padding", max_padding,
          "must be a fraction in [0, 1] (1: keep every face)")
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


def real_faces(data: ml_collections.ConfigDict, source: str,
               partitions=faces.PARTITIONS) -> Split:
  """Every face of one real source of `data.dataset` in those of `partitions` that have it, read
  as `data` reads faces (crop, max_padding): e.g. a source kept out of training, as a test of
  unseen real photos."""
  sets = _Sets(data)
  prepared = sets.prepared(data.dataset)
  having = [p for p in partitions if faces.slug(source) in prepared.groups(p, "real")]
  if not having:
    raise ConfigError(f"{data.dataset} has no real source {source!r} (it has: "
                      f"{', '.join(prepared.groups('train', 'real')) or 'none'})")
  segments = []
  for partition in having:
    segments += sets.segments(data.dataset, partition, [], (source,))[0]
  images = RecordImages([sets.kept(s) for s in segments], sets.side, sets.crop)
  return _split(images, [REAL] * len(segments), ["real"] * len(segments), scan=True)


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
