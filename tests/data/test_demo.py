"""The embedded demo data source and its three generators."""

import re

import ml_collections
import numpy as np
import pytest

from agg_jax import data
from agg_jax.config_validation import ConfigError
from agg_jax.data import demo, generators


def read_all(split) -> np.ndarray:
  return split.images.read(np.arange(len(split)))


@pytest.fixture(scope="module")
def dataset():
  return demo.build("gmm", image_size=32, train_per_class=16, val_per_class=8,
                    test_per_class=12, seed=1)


def test_splits_have_the_protocol_layout(dataset):
  assert dataset.train_set == "gmm"
  assert set(dataset.test) == set(demo.GENERATORS)
  assert len(dataset.train) == 32 and dataset.train.image_shape == (32, 32, 3)
  assert read_all(dataset.train).shape == (32, 32, 32, 3)
  assert dataset.train.methods.tolist() == ["real"] * 16 + ["gmm"] * 16
  assert dataset.validation.labels.tolist() == [0] * 8 + [1] * 8
  for split in dataset.test.values():
    assert split.labels.tolist() == [0] * 12 + [1] * 12
  # Every test set shares the same real images, as FF++'s manipulations share the originals.
  reals = [split.images.read(np.arange(12)) for split in dataset.test.values()]
  np.testing.assert_array_equal(reals[0], reals[1])


def test_build_is_deterministic():
  a = demo.build("splice", image_size=32, train_per_class=4, val_per_class=2, test_per_class=2)
  b = demo.build("splice", image_size=32, train_per_class=4, val_per_class=2, test_per_class=2)
  np.testing.assert_array_equal(read_all(a.train), read_all(b.train))
  np.testing.assert_array_equal(read_all(a.test["gmm"]), read_all(b.test["gmm"]))


def test_a_split_is_made_only_when_read_and_is_the_same_whichever_is_read_first():
  args = ("gmm", 32, 8, 4, 6, 2)
  lazy, eager = demo.build(*args), demo.build(*args)
  test_first = {name: read_all(split) for name, split in lazy.test.items()}
  assert not lazy.train.images.made and not lazy.validation.images.made  # never read
  eager_train = read_all(eager.train)
  for name, split in eager.test.items():
    np.testing.assert_array_equal(read_all(split), test_first[name], err_msg=name)
  np.testing.assert_array_equal(read_all(lazy.train), eager_train)


def demo_config(**fields) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(source="demo", train_set="gmm", image_size=32,
                                          train_per_class=4, val_per_class=2, test_per_class=2,
                                          seed=0))
  config.update(fields)
  return config


def test_the_source_is_found_by_name_and_checks_its_own_fields():
  assert data.source("demo") is demo
  assert data.image_shape(demo_config(image_size=48)) == (48, 48, 3)
  assert data.load(demo_config()).train_set == "gmm"
  for fields, message in [
      (dict(train_set="stylegan"), "config.data.train_set='stylegan'"),
      (dict(image_size=40), "config.data.image_size=40: must be a multiple of 16"),
      (dict(image_size=1024), "the demo's photographs allow at most 560 px"),
      (dict(test_per_class=0), "config.data.test_per_class=0"),
      (dict(source="nowhere"), "config.data.source='nowhere': unknown"),
      (dict(source="agg_jax.metrics"), "does not define check, image_shape, load"),
  ]:
    with pytest.raises(ConfigError, match=re.escape(message)):
      data.check_config(demo_config(**fields))
  incomplete = ml_collections.ConfigDict(dict(source="demo", train_set="gmm"))
  with pytest.raises(ConfigError, match="config.data.image_size is missing"):
    data.check_config(incomplete)


def test_unknown_generator_is_named():
  with pytest.raises(ValueError, match="'stylegan' is not a demo generator"):
    demo.build("stylegan")


def _real_crops(n=32, size=32):
  return demo.sample_crops(list(demo.load_photos()), n, size, np.random.default_rng(0))


def test_upsample_fakes_carry_a_two_pixel_period():
  real = _real_crops()
  fake = generators.upsample_fakes(real, generators.upsample_draw(len(real),
                                                                  np.random.default_rng(0)))
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
  gmm = generators.PatchGMM(len(real), 32, np.random.default_rng(0), components=4).fit(real)
  fake = gmm(real, gmm.draw(len(real), 32, np.random.default_rng(1))())
  diff = np.abs(fake.astype(int) - real.astype(int))
  assert diff.mean() > 2  # every patch is resampled
  correlation = np.corrcoef(fake.reshape(32, -1).mean(1), real.reshape(32, -1).mean(1))[0, 1]
  assert correlation > 0.9  # but each image keeps its content


def test_splice_changes_a_central_region_only():
  real = _real_crops()
  ellipses = generators.splice_draw(len(real), len(real), np.random.default_rng(0))
  fake = generators.splice_fakes(real, real[::-1], ellipses)
  diff = np.abs(fake.astype(int) - real.astype(int)).sum(-1)
  assert diff[:, 0, 0].max() == 0  # corners untouched
  assert (diff[:, 16, 16] > 0).mean() > 0.9  # the centre is pasted
