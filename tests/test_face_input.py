"""face_input: the central crop, the model's input and the padding measure, on hand-made faces."""

import cv2
import numpy as np

from agg_jax import face_input


def test_central_crop_keeps_the_centred_square():
  face = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
  np.testing.assert_array_equal(face_input.central_crop(face, 0.5), face[2:6, 2:6])
  assert face_input.central_crop(face, 1.0) is face


def test_model_input_crops_then_resizes_as_opencv_does():
  rng = np.random.default_rng(0)
  face = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
  expected = cv2.resize(face[64:192, 64:192], (96, 96), interpolation=cv2.INTER_AREA)
  np.testing.assert_array_equal(face_input.model_input(face, 96, 0.5), expected)
  np.testing.assert_array_equal(face_input.model_input(face, 128, 0.5), face[64:192, 64:192])


def test_border_fraction_counts_pixels_black_in_every_channel():
  face = np.full((10, 10, 3), 40, np.uint8)
  face[:3] = 0  # a black border: 30 pixels
  face[5, 5] = (0, 0, 7)  # dark, not black
  assert face_input.border_fraction(face) == 0.3
  assert face_input.border_fraction(face_input.central_crop(face, 0.4)) == 0.0
