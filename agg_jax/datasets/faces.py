"""What every face dataset stores, and how a photo or video becomes its examples.

Each example is one aligned face (paper Sec. III-A, IV-A; aligned by ``agg_jax.preprocess``
with the settings recorded in the dataset's metadata), stored losslessly as PNG bytes that the
project encodes (a lossy re-encode would add the very artifacts a detector learns), with its
label and where it comes from. A photo or video that cannot be read, or a photo or frame
without a usable face, is a skip: counted and listed in the dataset's metadata
(``builder.FaceBuilder``), never an example.

Splits are named ``<partition>_<real|fake>_<group>`` (``train_fake_neuraltextures``,
``test_real_youtube``): the label and the method or real source of every example of a split
are known from its name, so a reader balances classes and mixes methods without reading a
record.
"""

import dataclasses
import re
from collections.abc import Iterator

import cv2
import numpy as np
import tensorflow_datasets as tfds

from agg_jax.preprocess.aligner import AlignedFace, Aligner, Settings

PARTITIONS = ("train", "validation", "test")
LABELS = ("real", "fake")  # label 0, 1


def slug(name: str) -> str:
  """A group name as a split name holds it: lower case, runs of other characters as ``_``."""
  return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def split_name(partition: str, label: str, group: str) -> str:
  """``test_fake_neuraltextures``: the split of one partition, class and method (or source)."""
  if partition not in PARTITIONS or label not in LABELS:
    raise ValueError(f"no split for partition {partition!r}, label {label!r}")
  return f"{partition}_{label}_{slug(group)}"


def parse_split_name(name: str) -> tuple[str, str, str] | None:
  """(partition, label, group) of a split named by ``split_name``; None for any other."""
  match = re.fullmatch(rf"({'|'.join(PARTITIONS)})_({'|'.join(LABELS)})_(\w+)", name)
  return match.groups() if match else None


def features() -> tfds.features.FeaturesDict:
  """The features of every face dataset (the image's size is in the metadata)."""
  text = tfds.features.Text
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(), dtype=np.object_),  # PNG bytes
      "label": tfds.features.ClassLabel(names=list(LABELS)),
      "method": text(),  # the forgery method; "real" for real faces
      "source": text(),  # the real dataset or generator's training data (youtube, celebahq...)
      "video_id": text(),  # the video's path in the manual folder; "" for photos
      "frame": np.int32,  # the frame index in the video; -1 for photos
      "compression": text(),  # c0, c23, c40 where known, else ""
      "quality": text(),  # the alignment's doubts (preprocess.quality), ";"-joined; "" if none
      "padding": np.float32,  # fraction of the aligned face outside the source picture
      "path": text(),  # the photo's or video's path in the manual folder
  })


def encode_png(rgb: np.ndarray) -> bytes:
  ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
  if not ok:
    raise ValueError("PNG encoding failed")
  return png.tobytes()


def decode_png(data: bytes) -> np.ndarray:
  """The (H, W, 3) uint8 RGB face of an example's ``image`` bytes."""
  bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if bgr is None:
    raise ValueError("not a PNG image")
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def padding_fraction(affine: np.ndarray, image_size: tuple[int, int], size: int) -> float:
  """The fraction of the ``size`` x ``size`` aligned face whose source point (through the
  inverse of ``affine``, source -> face) lies outside the ``image_size`` (width, height) picture:
  the black border a tight crop leaves, a cue that can correlate with the label."""
  full = np.vstack([np.asarray(affine, np.float64), [0.0, 0.0, 1.0]])
  inverse = np.linalg.inv(full)[:2]
  u, v = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
  x = inverse[0, 0] * u + inverse[0, 1] * v + inverse[0, 2]
  y = inverse[1, 0] * u + inverse[1, 1] * v + inverse[1, 2]
  width, height = image_size
  inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
  return float(1.0 - inside.mean())


@dataclasses.dataclass(frozen=True)
class Item:
  """One photo or video of a manual folder and what it is."""
  path: str  # absolute
  relative: str  # as recorded in the dataset, "/"-separated
  split: str  # the split its faces go to (``split_name``)
  method: str  # "real" for real items
  source: str
  kind: str = "image"  # or "video"
  compression: str = ""

  @property
  def label(self) -> int:
    return 0 if self.method == "real" else 1


def _record(item: Item, face: AlignedFace, image: bytes, padding: float) -> dict:
  return {"image": image, "label": item.label, "method": item.method, "source": item.source,
          "video_id": item.relative if item.kind == "video" else "",
          "frame": -1 if face.frame is None else int(face.frame),
          "compression": item.compression, "quality": ";".join(face.quality or []),
          "padding": padding, "path": item.relative}


def examples(aligner: Aligner, item: Item) -> tuple[list[tuple[str, dict]], list[dict]]:
  """(key, example) for every face of ``item``, and a skip record (path, frame, status) for
  the item if it cannot be read or has no frames, and for each photo or frame without a usable
  face. Never raises."""
  kept, skipped = [], []
  faces = aligner.file(item.path, item.kind)
  size = aligner.settings.size
  for face in faces:
    frame = -1 if face.frame is None else int(face.frame)
    if face.ok:
      try:
        padding = padding_fraction(face.affine, face.image_size, size)
        kept.append((f"{item.relative}#{frame}",
                     _record(item, face, encode_png(face.face), padding)))
        continue
      except Exception as e:  # pylint: disable=broad-except  # one bad face never stops a build
        face = face.failed(f"{type(e).__name__}: {e}")
    status = face.status if face.note is None else f"{face.status}: {face.note}"
    skipped.append({"path": item.relative, "frame": frame, "status": status})
  if not faces:
    skipped.append({"path": item.relative, "frame": -1, "status": "error: no frames"})
  return kept, skipped


class Aligning:
  """Aligns items in ``workers`` processes (the dlib models loaded once per process), kept open
  across the splits of a build: ``with Aligning(settings, 2) as a: a.map(items)``."""

  def __init__(self, settings: Settings, workers: int = 1):
    self.settings = settings
    self.workers = workers
    self._aligner = None
    self._pool = None

  def __enter__(self) -> "Aligning":
    return self

  def __exit__(self, *exc) -> None:
    if self._pool is not None:
      self._pool.terminate()
      self._pool = None

  def map(self, items: list[Item]) -> Iterator[tuple[Item, list[tuple[str, dict]], list[dict]]]:
    """(item, examples, skips) for every item, in order."""
    if self.workers <= 1:
      self._aligner = self._aligner or Aligner(self.settings)
      for item in items:
        yield item, *examples(self._aligner, item)
      return
    if self._pool is None:
      import multiprocessing  # pylint: disable=import-outside-toplevel
      self._pool = multiprocessing.get_context("spawn").Pool(
          self.workers, initializer=_init_worker, initargs=(self.settings,))
    for item, result in zip(items, self._pool.imap(_worker_examples, items, chunksize=1)):
      yield item, *result


_WORKER_ALIGNER: Aligner | None = None


def _init_worker(settings: Settings) -> None:
  global _WORKER_ALIGNER
  _WORKER_ALIGNER = Aligner(settings)


def _worker_examples(item: Item) -> tuple[list[tuple[str, dict]], list[dict]]:
  return examples(_WORKER_ALIGNER, item)
