"""What every face dataset stores: split names, PNG round trips, the padding fraction."""

import cv2
import numpy as np
import pytest

from agg_jax.datasets import faces


def test_split_names_round_trip_and_slug_the_group():
  assert faces.split_name("test", "fake", "NeuralTextures") == "test_fake_neuraltextures"
  assert faces.split_name("train", "real", "Real Sources-2") == "train_real_real_sources_2"
  assert faces.parse_split_name("validation_fake_sgan2") == ("validation", "fake", "sgan2")
  assert faces.parse_split_name("train") is None and faces.parse_split_name("val_real_x") is None
  with pytest.raises(ValueError):
    faces.split_name("val", "real", "x")


def test_png_is_lossless():
  rgb = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
  assert np.array_equal(faces.decode_png(faces.encode_png(rgb)), rgb)
  with pytest.raises(ValueError):
    faces.decode_png(b"not a png")


@pytest.mark.parametrize("seed", range(5))
def test_padding_is_the_black_fraction_of_a_warped_white_picture(seed):
  """OpenCV's own warp of an all-white source is the reference: its black pixels are the
  aligned face's points outside the picture."""
  rng = np.random.default_rng(seed)
  width, height, size = int(rng.integers(80, 300)), int(rng.integers(80, 300)), 128
  angle, scale = rng.uniform(-0.5, 0.5), rng.uniform(0.5, 2.5)
  shift = rng.uniform(-60, 60, 2)
  affine = np.array([[scale * np.cos(angle), -scale * np.sin(angle), shift[0]],
                     [scale * np.sin(angle), scale * np.cos(angle), shift[1]]])
  white = np.full((height, width), 255, np.uint8)
  warped = cv2.warpAffine(white, affine, (size, size), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  expected = float((warped == 0).mean())
  assert faces.padding_fraction(affine, (width, height), size) == pytest.approx(expected, abs=0.02)
