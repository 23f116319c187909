"""Class-balanced training batches, streamed by worker processes, and padded evaluation batches.

A training batch is a pure function of (seed, step): each class (or each mixed fake method) is read
as an endless stream of seeded permutations, so a run resumed at step s sees exactly the batches it
would have seen, and the iterator state to checkpoint is the step alone. Every process computes the
same global batch and keeps its own rows (`process_index`), so multi-host training reads disjoint
shards.
"""

from collections.abc import Iterator

import numpy as np

from agg_jax.config_validation import require
from agg_jax.data.split import FAKE, REAL, Split

READ_THREADS = 2  # batches each worker process makes at once (decoding releases the GIL)


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


def allocate(total: int, weights: dict[str, float]) -> dict[str, int]:
  """`total` rows shared in proportion to `weights` (largest remainders; every row given)."""
  names = list(weights)
  share = np.array([weights[n] for n in names], np.float64)
  share = share / share.sum() * total
  counts = np.floor(share).astype(int)
  for i in np.argsort(-(share - counts), kind="stable")[:total - counts.sum()]:
    counts[i] += 1
  return dict(zip(names, counts.tolist()))


class BalancedBatches:
  """Half real, half fake batches, augmented, indexed by step.

  `mix` ({method: weight}, by `split.methods`) shares the fake half among several methods in
  proportion to their weights (the same counts in every batch); `augment` (augment.Augment)
  blurs and JPEG-compresses each row with its own generator seeded by (seed, step, row), so a
  row's augmentation does not depend on how the batch is split over processes.
  """

  def __init__(self, split: Split, batch_size: int, seed: int, flip: bool = True,
               mix: dict[str, float] | None = None, augment=None):
    check_batch_size(batch_size)
    self.split = split
    self.batch_size = batch_size
    self.seed = seed
    self.flip = flip
    self.augment = augment if augment is not None and augment.active else None
    half = batch_size // 2
    # (indices, rows per batch, stream id); ids 0 and 1 keep the single-method batches as before.
    self.streams = [(np.flatnonzero(split.labels == REAL), half, REAL)]
    if mix is None:
      self.streams.append((np.flatnonzero(split.labels == FAKE), half, FAKE))
    else:
      if split.methods is None:
        raise ValueError("mixing fake methods needs the training split's methods")
      for k, (method, count) in enumerate(allocate(half, mix).items()):
        self.streams.append((np.flatnonzero((split.labels == FAKE) & (split.methods == method)),
                             count, 10 + k))
    self.mixed = mix is not None
    for indices, _, stream in self.streams:
      if not len(indices):
        what = "real" if stream == REAL else "fake" if stream == FAKE else "fake " + list(mix)[
            stream - 10]
        raise ValueError(f"the training split has no {what} images")

  def indices(self, step: int) -> np.ndarray:
    """Global batch indices for `step`, real and fake interleaved (every shard is balanced)."""
    real, *fakes = (_stream(ix, step * count, count, self.seed, stream)
                    for ix, count, stream in self.streams)
    fake = np.concatenate(fakes)
    if self.mixed:  # methods spread over the batch, not one method per shard
      fake = fake[np.random.default_rng((self.seed, 4, step)).permutation(len(fake))]
    return np.stack([real, fake], axis=1).reshape(-1)

  def batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
    """This process's rows of the global batch for `step`."""
    rows = self.indices(step).reshape(process_count, -1)[process_index]
    images = self.split.images.read(rows)
    if self.augment is not None:
      first = process_index * len(rows)
      images = np.stack([self.augment(images[i:i + 1],
                                      np.random.default_rng((self.seed, 3, step, first + i)))[0]
                         for i in range(len(rows))])
    if self.flip:
      flips = np.random.default_rng((self.seed, 2, step)).random(self.batch_size) < 0.5
      flips = flips.reshape(process_count, -1)[process_index]
      images = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
    return {"images": images, "labels": self.split.labels[rows].astype(np.float32)}


class _BatchAt:
  """`batches.batch(step, ...)` as a picklable function of the step (grain's workers)."""

  def __init__(self, batches: BalancedBatches, process_index: int, process_count: int):
    self.batches, self.process_index, self.process_count = batches, process_index, process_count

  def __call__(self, step: int) -> dict:
    return self.batches.batch(int(step), self.process_index, self.process_count)


def train_stream(batches: BalancedBatches, start: int, stop: int, process_index: int = 0,
                 process_count: int = 1, workers: int = 0) -> Iterator[dict]:
  """This process's batches of steps [start, stop), in order.

  workers > 0: the batches are read, decoded and augmented in that many grain worker processes
  (spawned: the entry module runs under `if __name__ == "__main__":`), a few steps ahead. Each
  batch is a function of its step alone, so resuming at `start` needs no iterator state.
  """
  make = _BatchAt(batches, process_index, process_count)
  if workers <= 0:
    return map(make, range(start, stop))
  import grain  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():  # grain reads its absl flags (outside an absl app: defaults)
    flags.FLAGS.mark_as_parsed()
  steps = grain.MapDataset.range(start, stop).map(make)
  # Bounded read-ahead: grain's defaults (16 threads, 500 elements per worker) let a fast
  # pipeline pile up gigabytes of batches in front of a slow train step.
  read = grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=READ_THREADS)
  batches = iter(steps.to_iter_dataset(read).mp_prefetch(
      grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2)))
  return _Owned(batches)


class _Owned:
  """Batches copied out of grain's shared memory (freed at once), closable."""

  def __init__(self, batches):
    self.batches = batches

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return {key: np.array(value) for key, value in next(self.batches).items()}

  def close(self) -> None:
    self.batches.close()


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
