"""The embedded demo dataset and its three generators."""

import numpy as np
import pytest

from agg_jax.data import demo, generators


@pytest.fixture(scope="module")
def dataset():
  return demo.build("gmm", image_size=32, train_per_class=16, val_per_class=8,
                    test_per_class=12, seed=1)


def test_splits_have_the_protocol_layout(dataset):
  assert dataset.train_set == "gmm"
  assert set(dataset.test) == set(demo.GENERATORS)
  assert dataset.train.images.shape == (32, 32, 32, 3)
  assert dataset.validation.labels.tolist() == [0] * 8 + [1] * 8
  for split in dataset.test.values():
    assert split.labels.tolist() == [0] * 12 + [1] * 12
  # Every test set shares the same real images, as FF++'s manipulations share the originals.
  reals = [split.images[:12] for split in dataset.test.values()]
  np.testing.assert_array_equal(reals[0], reals[1])


def test_build_is_deterministic():
  a = demo.build("splice", image_size=32, train_per_class=4, val_per_class=2, test_per_class=2)
  b = demo.build("splice", image_size=32, train_per_class=4, val_per_class=2, test_per_class=2)
  np.testing.assert_array_equal(a.train.images, b.train.images)
  np.testing.assert_array_equal(a.test["gmm"].images, b.test["gmm"].images)


def test_unknown_generator_is_named():
  with pytest.raises(ValueError, match="'stylegan' is not a demo generator"):
    demo.build("stylegan")


def _real_crops(n=32, size=32):
  return demo.sample_crops(demo.load_photos(), n, size, np.random.default_rng(0))


def test_upsample_fakes_carry_a_two_pixel_period():
  real = _real_crops()
  fake = generators.upsample_fakes(real, np.random.default_rng(0))
  assert fake.shape == real.shape and fake.dtype == np.uint8

  def period2_energy(images):  # spectrum power at the Nyquist frequency along both axes
    gray = images.astype(np.float64).mean(-1)
    gray -= gray.mean(axis=(1, 2), keepdims=True)
    spectrum = np.abs(np.fft.fft2(gray)) ** 2
    n = gray.shape[1] // 2
    return (spectrum[:, n, n] / spectrum.sum(axis=(1, 2))).mean()

  assert period2_energy(fake) > 10 * period2_energy(real)


def test_gmm_fakes_change_pixels_but_keep_the_picture():
  real = _real_crops()
  gmm = generators.PatchGMM(real, np.random.default_rng(0), components=4)
  fake = gmm(real, np.random.default_rng(1))
  diff = np.abs(fake.astype(int) - real.astype(int))
  assert diff.mean() > 2  # every patch is resampled
  correlation = np.corrcoef(fake.reshape(32, -1).mean(1), real.reshape(32, -1).mean(1))[0, 1]
  assert correlation > 0.9  # but each image keeps its content


def test_splice_changes_a_central_region_only():
  real = _real_crops()
  fake = generators.splice_fakes(real, real[::-1], np.random.default_rng(0))
  diff = np.abs(fake.astype(int) - real.astype(int)).sum(-1)
  assert diff[:, 0, 0].max() == 0  # corners untouched
  assert (diff[:, 16, 16] > 0).mean() > 0.9  # the centre is pasted
