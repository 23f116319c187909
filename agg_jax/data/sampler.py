"""Class-balanced training batches and padded evaluation batches.

A training batch is a pure function of (seed, step): each class is read as an endless stream of
seeded permutations, so a run resumed at step s sees exactly the batches it would have seen, and
the iterator state to checkpoint is the step alone. Every process computes the same global
batch and keeps its own rows (`process_index`), so multi-host training reads disjoint shards.
"""

from collections.abc import Iterator

import numpy as np

from agg_jax.config_validation import require
from agg_jax.data.split import FAKE, REAL, Split


def check_batch_size(batch_size: int, key: str = "train.batch_size") -> None:
  """Class-balanced batches hold as many real as fake images: the size must be even."""
  require(batch_size % 2 == 0, key, batch_size, "must be even (class-balanced batches)")


def _stream(indices: np.ndarray, start: int, count: int, seed: int, stream: int) -> np.ndarray:
  """Positions [start, start + count) of the endless sequence of seeded permutations."""
  n = len(indices)
  out = np.empty(count, np.int64)
  filled = 0
  while filled < count:
    epoch, offset = divmod(start + filled, n)
    perm = np.random.default_rng((seed, stream, epoch)).permutation(n)
    take = min(count - filled, n - offset)
    out[filled:filled + take] = indices[perm[offset:offset + take]]
    filled += take
  return out


class BalancedBatches:
  """Half real, half fake batches with random horizontal flips, indexed by step."""

  def __init__(self, split: Split, batch_size: int, seed: int, flip: bool = True):
    check_batch_size(batch_size)
    self.split = split
    self.batch_size = batch_size
    self.seed = seed
    self.flip = flip
    self.by_class = [np.flatnonzero(split.labels == label) for label in (REAL, FAKE)]
    for label, indices in zip(("real", "fake"), self.by_class):
      if not len(indices):
        raise ValueError(f"the training split has no {label} images")

  def indices(self, step: int) -> np.ndarray:
    """Global batch indices for `step`, real and fake interleaved (every shard is balanced)."""
    half = self.batch_size // 2
    real, fake = (_stream(ix, step * half, half, self.seed, label)
                  for label, ix in enumerate(self.by_class))
    return np.stack([real, fake], axis=1).reshape(-1)

  def batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
    """This process's rows of the global batch for `step`."""
    rows = self.indices(step).reshape(process_count, -1)[process_index]
    images = self.split.images.read(rows)
    if self.flip:
      flips = np.random.default_rng((self.seed, 2, step)).random(self.batch_size) < 0.5
      flips = flips.reshape(process_count, -1)[process_index]
      images = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
    return {"images": images, "labels": self.split.labels[rows].astype(np.float32)}


def eval_batches(split: Split, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
  """Fixed-size batches over the whole split, the last one padded; `mask` marks real rows."""
  for start in range(0, len(split), batch_size):
    rows = np.arange(start, min(start + batch_size, len(split)))
    mask = np.zeros(batch_size, bool)
    mask[:len(rows)] = True
    rows = np.pad(rows, (0, batch_size - len(rows)), mode="edge")
    local = rows.reshape(process_count, -1)[process_index]
    yield {"images": split.images.read(local), "labels": split.labels[local].astype(np.float32),
           "mask": mask.reshape(process_count, -1)[process_index]}
