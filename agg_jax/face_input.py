"""An aligned face as the model sees it: its central crop (`config.data.crop`), resized.

One function for every reader of aligned faces (the "tfds" data source, `exported.prepare`),
so that training, evaluation and prediction give the model the same pixels. OpenCV only.
"""

import numpy as np


def crop_side(side: int, crop: float) -> int:
  """The side of the central crop that keeps `crop` of an aligned face's side (at least 1)."""
  return max(1, int(round(side * float(crop))))


def central_crop(face: np.ndarray, crop: float) -> np.ndarray:
  """The centred square of `face` (H, W, ...) whose side is `crop` of its side (1.0: all)."""
  if crop >= 1.0:
    return face
  side = crop_side(face.shape[0], crop)
  top = (face.shape[0] - side) // 2
  left = (face.shape[1] - side) // 2
  return face[top:top + side, left:left + side]


def model_input(face: np.ndarray, side: int, crop: float = 1.0) -> np.ndarray:
  """An aligned face (A, A, 3) uint8 -> the model's (side, side, 3): the central `crop` of it,
  resized with OpenCV INTER_AREA where the sides differ."""
  import cv2  # pylint: disable=import-outside-toplevel
  face = central_crop(face, crop)
  if face.shape[0] == side and face.shape[1] == side:
    return face
  return cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)


def border_fraction(face: np.ndarray) -> float:
  """The fraction of `face` that is exactly black in every channel: the border the aligner
  fills where the aligned face reaches outside its source picture (padding), a cue that can
  correlate with the label (faces-mini's tight real crops)."""
  return float((np.asarray(face).max(axis=-1) == 0).mean())
