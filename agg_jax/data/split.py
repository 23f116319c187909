"""Labelled image splits, the unit every data source produces.

A split's images are read through `Images`, a random-access reader: an array in memory
(`ArrayImages`), images rendered on first use (the demo), or records in files. Callers read
rows with `split.images.read(indices)` and never hold a split's images as one array, so a split
may be larger than memory.
"""

import dataclasses
from collections.abc import Mapping
from typing import Protocol

import numpy as np

REAL, FAKE = 0, 1


class Images(Protocol):
  """Random access to the uint8 RGB images of a split."""

  @property
  def shape(self) -> tuple[int, int, int]:
    """(height, width, 3) of every image."""

  def __len__(self) -> int:
    ...

  def read(self, indices: np.ndarray) -> np.ndarray:
    """The images at `indices` (any order, repeats allowed): uint8 (len(indices), H, W, 3)."""


class ArrayImages:
  """Images held in one uint8 (N, H, W, 3) array."""

  def __init__(self, array: np.ndarray):
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
      raise ValueError(f"images must be uint8 (N, H, W, 3), got {array.dtype} {array.shape}")
    self.array = array

  @property
  def shape(self) -> tuple[int, int, int]:
    return tuple(self.array.shape[1:])

  def __len__(self) -> int:
    return len(self.array)

  def read(self, indices: np.ndarray) -> np.ndarray:
    return self.array[np.asarray(indices)]


@dataclasses.dataclass(frozen=True)
class Split:
  """Images with labels (1 = fake), string ids, and where known the video of each frame and the
  method that made each image ("real" for real images)."""
  images: Images
  labels: np.ndarray  # (N,) int32
  ids: np.ndarray  # (N,) str
  video_ids: np.ndarray | None = None
  methods: np.ndarray | None = None

  def __post_init__(self):
    n = len(self.images)
    if len(self.images.shape) != 3 or self.images.shape[-1] != 3:
      raise ValueError(f"images must be (H, W, 3), got {self.images.shape}")
    for name in ("labels", "ids", "video_ids", "methods"):
      value = getattr(self, name)
      if value is not None and len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries for {n} images")
    if not np.isin(self.labels, (REAL, FAKE)).all():
      raise ValueError("labels must be 0 (real) or 1 (fake)")

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.images.shape


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A training set (one forgery method), its validation split, and named test sets.

  A source may render or read a split's images only when they are first read, so evaluating a
  run touches the test sets alone.
  """
  train_set: str
  train: Split
  validation: Split
  test: Mapping[str, Split]
  # Several fake methods in training: their weights in the fake half of a batch (by
  # `train.methods`); None: the training split's fakes are drawn as one class.
  train_mix: dict[str, float] | None = None
