"""Class-balanced, step-indexed training batches and padded evaluation batches."""

import numpy as np
import pytest

from agg_jax.data import ArrayImages, BalancedBatches, Split, eval_batches


def _split(n_real=10, n_fake=6):
  n = n_real + n_fake
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
  labels = np.array([0] * n_real + [1] * n_fake, np.int32)
  return Split(ArrayImages(images), labels, np.array([f"id{i}" for i in range(n)]))


def test_batches_are_balanced_and_interleaved():
  batches = BalancedBatches(_split(), batch_size=8, seed=0)
  for step in range(5):
    labels = batches.batch(step)["labels"]
    np.testing.assert_array_equal(labels, [0, 1] * 4)


def test_each_class_is_read_as_epochs_of_permutations():
  split = _split(n_real=10, n_fake=6)
  batches = BalancedBatches(split, batch_size=4, seed=0)
  fake = np.concatenate([batches.indices(s)[1::2] for s in range(3)])  # 6 fakes = one epoch
  assert sorted(fake) == list(range(10, 16))
  real = np.concatenate([batches.indices(s)[0::2] for s in range(5)])  # 10 reals = one epoch
  assert sorted(real) == list(range(10))


def test_batches_depend_only_on_seed_and_step():
  a = BalancedBatches(_split(), 8, seed=3)
  b = BalancedBatches(_split(), 8, seed=3)
  np.testing.assert_array_equal(a.batch(7)["images"], b.batch(7)["images"])
  assert not np.array_equal(a.indices(7), BalancedBatches(_split(), 8, seed=4).indices(7))


def test_process_shards_partition_the_global_batch():
  batches = BalancedBatches(_split(), 8, seed=0, flip=False)
  whole = batches.batch(2)
  parts = [batches.batch(2, p, 2) for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([p["images"] for p in parts]), whole["images"])
  for part in parts:
    assert part["labels"].mean() == 0.5


def test_flips_mirror_images():
  split = _split()
  split.images.array[:, :, 0] = 255  # left column bright
  batch = BalancedBatches(split, 16, seed=0, flip=True).batch(0)["images"]
  flipped = batch[:, 0, -1, 0] == 255
  assert 0 < flipped.sum() < 16
  np.testing.assert_array_equal(batch[flipped][:, :, -1], 255)


def test_odd_batch_size_is_refused():
  with pytest.raises(ValueError, match="must be even"):
    BalancedBatches(_split(), 7, seed=0)


def test_a_class_missing_from_training_is_refused():
  split = _split(n_real=4, n_fake=0)
  with pytest.raises(ValueError, match="no fake images"):
    BalancedBatches(split, 4, seed=0)


def test_eval_batches_cover_the_split_once_with_padding_masked():
  split = _split(10, 6)
  batches = list(eval_batches(split, 6))
  assert [b["images"].shape[0] for b in batches] == [6, 6, 6]
  kept = np.concatenate([b["images"][b["mask"], 0, 0, 0] for b in batches])
  np.testing.assert_array_equal(kept, np.arange(16))
