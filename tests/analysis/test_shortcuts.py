"""Shortcut cues: the JPEG quality estimate against Pillow's own encoder, and a cue's AP against
scikit-learn's with the direction learned on the training faces."""

import io

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score

from agg_jax.analysis import shortcuts
from tests.helpers import faces_mini, requires_faces_mini


@requires_faces_mini
@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95])
def test_jpeg_quality_is_read_back_from_a_real_photo_saved_at_it(quality):
  buffer = io.BytesIO()
  with Image.open(faces_mini("real/yonsei", 1)[0]) as photo:
    photo.save(buffer, "JPEG", quality=quality)
  with Image.open(buffer) as saved:
    assert shortcuts.jpeg_quality(saved) == quality


def test_a_picture_that_is_not_a_jpeg_has_quality_0():
  assert shortcuts.jpeg_quality(Image.new("RGB", (8, 8))) == 0


@requires_faces_mini
def test_source_cues_of_a_faces_mini_photo():
  path = faces_mini("fake/sd21", 1)[0]
  megapixels, quality = shortcuts.source_cues(path)
  with Image.open(path) as image:
    assert megapixels == image.width * image.height / 1e6
  assert quality == 95  # faces-mini's README: every image saved at JPEG quality 95


def test_cue_ap_learns_its_direction_on_training_faces_only():
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1], 50)
  padding = np.where(labels == 0, 0.3, 0.0) + rng.uniform(0, 0.1, 100)  # real: more padding
  reversed_test = np.where(labels == 0, 0.0, 0.3) + rng.uniform(0, 0.1, 100)
  aps = shortcuts.cue_average_precision(
      (labels, padding), {"same": (labels, padding), "reversed": (labels, reversed_test)})
  assert shortcuts.direction(labels, padding) == -1
  assert aps["same"] == pytest.approx(100 * average_precision_score(labels, -padding))
  assert aps["same"] == 100.0
  assert aps["reversed"] == pytest.approx(100 * average_precision_score(labels, -reversed_test))
  assert aps["reversed"] < 50


def test_a_constant_cue_reaches_the_fraction_of_fakes():
  labels = np.array([0, 0, 0, 1])
  aps = shortcuts.cue_average_precision((labels, np.zeros(4)), {"t": (labels, np.zeros(4))})
  assert aps["t"] == 25.0
