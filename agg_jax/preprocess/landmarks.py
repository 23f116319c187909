"""68-point facial landmarks (dlib's shape predictor, iBUG 300-W markup) and the eye centres.

The eye centre is the mean of the eye's six landmarks: the "center of mass" of the paper
(Sec. III-A). "Left" is the subject's own left eye, points 42-47, which lies on the image's
right in a non-mirrored photo; points 36-41 are the subject's right eye.
"""

import os

import dlib
import numpy as np

from agg_jax.preprocess import dlib_models

LEFT_EYE = slice(42, 48)
RIGHT_EYE = slice(36, 42)


class Landmarker:
  """``landmarker(rgb, box) -> (68, 2)`` float array of (x, y) in the image's pixels."""

  def __init__(self, model_path: str | os.PathLike | None = None):
    path = model_path or dlib_models.find_model(dlib_models.LANDMARKS_68)
    self._predictor = dlib.shape_predictor(os.fspath(path))

  def __call__(self, rgb: np.ndarray, box) -> np.ndarray:
    l, t, r, b = (int(round(v)) for v in box)
    shape = self._predictor(rgb, dlib.rectangle(l, t, r, b))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def face_size(landmarks: np.ndarray) -> float:
  """Root-mean-square distance of the 68 points from their centroid: a size that follows the
  face smoothly from frame to frame (the detector box jumps between pyramid levels)."""
  return float(np.sqrt(((landmarks - landmarks.mean(axis=0)) ** 2).sum(axis=1).mean()))


def eye_centers(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(left, right) eye centres: means of points 42-47 and 36-41."""
  return landmarks[LEFT_EYE].mean(axis=0), landmarks[RIGHT_EYE].mean(axis=0)
