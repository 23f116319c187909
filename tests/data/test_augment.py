"""Wang et al.'s blur + JPEG augmentation, against scipy's blur and PIL's JPEG on a real photo."""

import io

import ml_collections
import numpy as np
import pytest
import scipy.ndimage
import skimage.data
import skimage.transform
from PIL import Image

from agg_jax.config_validation import ConfigError
from agg_jax.data import augment
from agg_jax.data.augment import Augment

SIGMAS = (0.3, 0.7, 1.0, 1.7, 2.5, 3.0)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
  """scikit-image's astronaut, 64 x 64 uint8 RGB."""
  small = skimage.transform.resize(skimage.data.astronaut(), (64, 64), anti_aliasing=True)
  return np.rint(small * 255).astype(np.uint8)


def _noise(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
  """Random images that any blur or JPEG visibly changes."""
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _scipy_blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """scipy's Gaussian per channel in float64 (default mode 'reflect', truncate 4)."""
  return scipy.ndimage.gaussian_filter(image.astype(np.float64), sigma=(sigma, sigma, 0))


def _reference_blur_in_place(image: np.ndarray, sigma: float) -> np.ndarray:
  """Wang et al.'s exact call: scipy filtering each channel in place into uint8."""
  image = image.copy()
  for c in range(3):
    scipy.ndimage.gaussian_filter(image[:, :, c], output=image[:, :, c], sigma=sigma)
  return image


def _pil_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="jpeg", quality=quality)
  buffer.seek(0)
  return np.asarray(Image.open(buffer).convert("RGB"))


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
  return np.any(before != after, axis=(1, 2, 3))


def _near_half(count: int, n: int) -> bool:
  """Within 4.5 binomial standard deviations of n / 2."""
  return abs(count - n / 2) < 4.5 * np.sqrt(n / 4)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_blur_is_scipys_gaussian_rounded(photo, sigma):
  # Same kernel and border as scipy, computed in float32: only the rounding to uint8 differs
  # (measured on the 64 x 64 photo: max 0.50, mean 0.13 to 0.25 grey levels, borders included).
  diff = np.abs(augment.gaussian_blur(photo, sigma) - _scipy_blur(photo, sigma))
  assert diff.max() <= 0.5 + 1e-3
  assert diff.mean() < 0.3


@pytest.mark.parametrize("sigma", SIGMAS)
def test_blur_differs_from_the_reference_call_by_its_truncation_only(photo, sigma):
  # The reference truncates to uint8 after each of scipy's two 1-D passes, so it is never
  # brighter than the rounded result and at most 2 levels darker (measured mean 0.95 to 1.0).
  ours = augment.gaussian_blur(photo, sigma).astype(int)
  darker_by = ours - _reference_blur_in_place(photo, sigma)
  assert darker_by.min() >= 0 and darker_by.max() <= 2


def test_blur_sigma_zero_is_the_identity(photo):
  np.testing.assert_array_equal(augment.gaussian_blur(photo, 0.0), photo)
  np.testing.assert_array_equal(
      Augment(flip=False, blur_prob=1.0, blur_sigma=(0.0, 0.0))(photo[None], _rng(0))[0], photo)


@pytest.mark.parametrize("quality", (30, 55, 75, 100))
def test_jpeg_matches_pils_round_trip(photo, quality):
  # Both are libjpeg-turbo with 4:2:0 chroma: measured identical here (mean 0), while
  # compression itself moves pixels by 2.6 (quality 100) to 9.9 (quality 30) levels on average.
  ours = augment.jpeg(photo, quality).astype(int)
  assert np.abs(ours - _pil_jpeg(photo, quality)).mean() < 0.5
  assert np.abs(ours - photo).mean() > 1


def _rng(seed: int) -> np.random.Generator:
  return np.random.default_rng((seed, 2, 7))


def test_same_seed_same_output_different_seed_different_output(photo):
  images = np.stack([photo, photo[::-1], photo[:, ::-1], photo.transpose(1, 0, 2)] * 4)
  augmenter = Augment(blur_prob=0.5, jpeg_prob=0.5)
  first = augmenter(images, _rng(0))
  np.testing.assert_array_equal(first, augmenter(images, _rng(0)))
  assert not np.array_equal(first, augmenter(images, _rng(1)))


def test_each_image_is_blurred_with_probability_p():
  images, n = _noise(400), 400
  out = Augment(flip=False, blur_prob=0.5, blur_sigma=(1.0, 3.0))(images, _rng(0))
  assert _near_half(_changed(images, out).sum(), n)


def test_each_image_is_compressed_with_probability_p():
  images, n = _noise(400), 400
  out = Augment(flip=False, jpeg_prob=0.5, jpeg_quality=(30, 90))(images, _rng(0))
  assert _near_half(_changed(images, out).sum(), n)


def test_parameters_span_their_ranges():
  draws = Augment(blur_prob=0.1, jpeg_prob=0.1).sample(20_000, _rng(0))
  assert 0 <= draws.sigma.min() < 0.05 and 2.95 < draws.sigma.max() < 3
  assert set(draws.quality.tolist()) == set(range(30, 101))  # integers, both ends included
  assert abs(draws.blur.mean() - 0.1) < 0.01 and abs(draws.jpeg.mean() - 0.1) < 0.01


def test_without_blur_or_jpeg_only_flips_change_images(photo):
  images = np.stack([photo] * 64)
  out = Augment()(images, _rng(0))
  flipped = _changed(images, out)
  assert _near_half(flipped.sum(), 64)
  np.testing.assert_array_equal(out[flipped], images[flipped][:, :, ::-1])


def test_no_flips_and_zero_probabilities_is_the_identity(photo):
  augmenter = Augment(flip=False)
  assert not augmenter.active and Augment().active and Augment(False, jpeg_prob=0.1).active
  images = np.stack([photo, photo[::-1]])
  np.testing.assert_array_equal(augmenter(images, _rng(0)), images)


def test_flips_are_exact_mirrors_of_the_unflipped_result(photo):
  images = np.stack([photo, photo[::-1]] * 8)
  with_flips = Augment(blur_prob=0.5, jpeg_prob=0.5)
  draws = with_flips.sample(len(images), _rng(3))
  assert 0 < draws.flip.sum() < len(images)
  flipped = with_flips.apply(images, draws)
  unflipped = with_flips.apply(images, draws._replace(flip=np.zeros(len(images), bool)))
  np.testing.assert_array_equal(flipped[draws.flip], unflipped[draws.flip][:, :, ::-1])
  np.testing.assert_array_equal(flipped[~draws.flip], unflipped[~draws.flip])
  # Turning flips off consumes the same draws: blur and JPEG decisions stay the same.
  np.testing.assert_array_equal(Augment(False, 0.5, jpeg_prob=0.5)(images, _rng(3)), unflipped)


def test_rows_of_a_global_batch_are_augmented_as_in_the_whole_batch(photo):
  images = np.stack([photo, photo[::-1]] * 4)
  augmenter = Augment(blur_prob=0.5, jpeg_prob=0.5)
  draws = augmenter.sample(len(images), _rng(0))
  whole = augmenter.apply(images, draws)
  rows = np.arange(4, 8)
  np.testing.assert_array_equal(augmenter.apply(images[rows], draws.take(rows)), whole[rows])


def test_bad_images_and_settings_are_refused(photo):
  with pytest.raises(ValueError, match="uint8"):
    Augment()(photo[None].astype(np.float32), _rng(0))
  with pytest.raises(ValueError, match="blur_prob"):
    Augment(blur_prob=1.5)
  with pytest.raises(ValueError, match="jpeg_quality"):
    Augment(jpeg_quality=(30, 101))


def _data(**augment_fields) -> ml_collections.ConfigDict:
  data = ml_collections.ConfigDict({"source": "demo"})
  if augment_fields:
    data.augment = ml_collections.ConfigDict(augment_fields)
  return data


def test_from_config_reads_the_fields_and_defaults_the_rest():
  assert augment.from_config(_data()) == Augment()
  assert augment.from_config(_data(blur_prob=0.1)) == Augment(blur_prob=0.1)
  assert augment.from_config(_data(flip=False, blur_prob=0.5, jpeg_prob=0.5)) == Augment(
      flip=False, blur_prob=0.5, jpeg_prob=0.5)


@pytest.mark.parametrize("fields, message", [
    ({"blur_prob": 1.5}, "config.data.augment.blur_prob=1.5: must be a probability in [0, 1]"),
    ({"jpeg_prob": -0.1}, "config.data.augment.jpeg_prob=-0.1: must be a probability"),
    ({"jpeg_prob": True}, "config.data.augment.jpeg_prob=True: must be a probability"),
    ({"flip": 1}, "config.data.augment.flip=1: must be True or False"),
    ({"blur": 0.1}, "config.data.augment.blur=0.1: unknown field; data.augment reads flip, "),
])
def test_config_errors_name_the_key(fields, message):
  with pytest.raises(ConfigError) as error:
    augment.check_config(_data(**fields))
  assert str(error.value).startswith(message)
