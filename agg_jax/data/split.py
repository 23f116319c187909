"""In-memory labelled image splits: the unit every data source produces."""

import dataclasses

import numpy as np

REAL, FAKE = 0, 1


@dataclasses.dataclass(frozen=True)
class Split:
  """Images with labels (1 = fake) and string ids; `video_ids` where frames come from videos."""
  images: np.ndarray  # (N, H, W, 3) uint8
  labels: np.ndarray  # (N,) int32
  ids: np.ndarray  # (N,) str
  video_ids: np.ndarray | None = None

  def __post_init__(self):
    n = len(self.images)
    if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
      raise ValueError(f"images must be uint8 (N, H, W, 3), got {self.images.dtype} "
                       f"{self.images.shape}")
    for name in ("labels", "ids", "video_ids"):
      value = getattr(self, name)
      if value is not None and len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries for {n} images")
    if not np.isin(self.labels, (REAL, FAKE)).all():
      raise ValueError("labels must be 0 (real) or 1 (fake)")

  def __len__(self) -> int:
    return len(self.images)

  @classmethod
  def concat(cls, *splits: "Split") -> "Split":
    with_videos = all(s.video_ids is not None for s in splits)
    return cls(np.concatenate([s.images for s in splits]),
               np.concatenate([s.labels for s in splits]).astype(np.int32),
               np.concatenate([s.ids for s in splits]),
               np.concatenate([s.video_ids for s in splits]) if with_videos else None)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A training set (one forgery method), its validation split, and named test sets."""
  train_set: str
  train: Split
  validation: Split
  test: dict[str, Split]
