"""The crop and the alignment (paper Sec. III-A and IV-A), defined exactly.

Paper: a box around the face "with a margin of 15% from top and bottom, and 10% from left and
right", then "an affine warp such that the left eye is always in the same location", 256x256,
where the left eye's position is its "center of mass". Here:

* Left eye: the subject's own left eye, dlib points 42-47 (on the image's right in a
  non-mirrored photo); its centre is the mean of the six points (``landmarks.eye_centers``).
* The warp is a similarity transform (rotation, uniform scale, translation), so faces are never
  squashed:
  - rotation: the eye line, from the right-eye centre to the left-eye centre, becomes horizontal;
  - scale: the detector box with the paper's margins, 1.3 h tall (15% of the box height added
    above and below) and 1.2 w wide (10% of its width left and right), fits the output:
    ``s = size / max(1.3 h, 1.2 w)``. dlib boxes are square, so the expanded height spans the
    output exactly and the sides get a little more than 10% of context;
  - translation: the left-eye centre lands on ``TEMPLATE * size``, (0.66, 0.34) of the output,
    (168.96, 87.04) for 256 px (pixel centres at integer coordinates). That is where the left
    eye sits on average when the margin-expanded box is centred in the output (over 225
    faces-mini faces, after levelling, it lies 0.21 h right of and 0.205 h above the box
    centre), so on an average face the output is the paper's box with margins, and on every
    face the left eye is at exactly the same point.
* The box's position does not enter (the eye fixes the translation); only its size does.
* Outside the source is black. Resampling is bilinear, after an area-averaging pre-shrink when
  the face is scaled down by more than 1.25x, so large faces do not alias.

The landmarks are dlib's, refined on the aligned face until they settle
(``aligner.Aligner._locate``).
A *pose* is the four numbers the transform is built from: left-eye x, y, eye-line angle
(radians) and log of the margin-expanded box extent; video frames smooth poses over time.
"""

import cv2
import numpy as np

from agg_jax.preprocess.landmarks import eye_centers

MARGIN_TOP_BOTTOM = 0.15
MARGIN_LEFT_RIGHT = 0.10
TEMPLATE = (0.66, 0.34)  # Left-eye centre, as fractions of the output width and height.


def template(size: int) -> np.ndarray:
  """The left eye's point in a ``size`` x ``size`` output."""
  return np.array(TEMPLATE, dtype=np.float64) * size


def extent(box) -> float:
  """Side of the square the margin-expanded box must fit: max(1.3 h, 1.2 w)."""
  l, t, r, b = box
  return max((b - t) * (1 + 2 * MARGIN_TOP_BOTTOM), (r - l) * (1 + 2 * MARGIN_LEFT_RIGHT))


def pose(box, landmarks: np.ndarray) -> np.ndarray:
  """(left-eye x, left-eye y, eye-line angle, log extent) of one face."""
  left, right = eye_centers(landmarks)
  angle = np.arctan2(left[1] - right[1], left[0] - right[0])
  return np.array([left[0], left[1], angle, np.log(extent(box))], dtype=np.float64)


def matrix(face_pose: np.ndarray, size: int) -> np.ndarray:
  """The 2x3 source -> output similarity transform of a pose."""
  x, y, angle, log_extent = face_pose
  s = size / np.exp(log_extent)
  c, si = s * np.cos(angle), s * np.sin(angle)
  rot = np.array([[c, si], [-si, c]])  # Rotation by -angle, times the scale.
  t = template(size) - rot @ np.array([x, y])
  return np.hstack([rot, t[:, None]])


def transform(a: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Applies a 2x3 affine matrix to (n, 2) points."""
  points = np.asarray(points, dtype=np.float64)
  return points @ a[:, :2].T + a[:, 2]


def _homogeneous(a: np.ndarray) -> np.ndarray:
  return np.vstack([a, [0.0, 0.0, 1.0]])


def extract_patch(image: np.ndarray, a: np.ndarray, size: int,
                  margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
  """The part of ``image`` that ``a`` maps into the output (grown by ``margin`` x size per side),
  pre-shrunk when the face is scaled down by more than 1.25x.

  Returns (patch, p) with ``p`` the 2x3 map from image to patch coordinates. Videos keep only
  these patches between detection and their smoothed warp.
  """
  m = margin * size
  corners = np.array([[-m, -m], [size + m, -m], [size + m, size + m], [-m, size + m]])
  footprint = transform(np.linalg.inv(_homogeneous(a))[:2], corners)
  h, w = image.shape[:2]
  x0, y0 = np.clip(np.floor(footprint.min(axis=0)).astype(int) - 2, 0, [w, h])
  x1, y1 = np.clip(np.ceil(footprint.max(axis=0)).astype(int) + 3, 0, [w, h])
  if x1 <= x0 or y1 <= y0:
    return np.zeros((1, 1, 3), np.uint8), np.array([[1.0, 0, -x0], [0, 1.0, -y0]])
  patch = image[y0:y1, x0:x1]
  scale = np.sqrt(abs(np.linalg.det(a[:, :2])))
  shrink = min(1.0, 1.25 * scale)
  if shrink < 1.0:
    new_size = (max(1, round(patch.shape[1] * shrink)), max(1, round(patch.shape[0] * shrink)))
    fx, fy = new_size[0] / patch.shape[1], new_size[1] / patch.shape[0]
    patch = cv2.resize(patch, new_size, interpolation=cv2.INTER_AREA)
    # cv2.resize aligns pixel areas: patch x = (image x - x0 + 0.5) * fx - 0.5.
    p = np.array([[fx, 0.0, (0.5 - x0) * fx - 0.5], [0.0, fy, (0.5 - y0) * fy - 0.5]])
  else:
    patch = np.ascontiguousarray(patch)
    p = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])
  return patch, p


def render(patch: np.ndarray, p: np.ndarray, a: np.ndarray, size: int) -> np.ndarray:
  """Warps a patch (image -> patch map ``p``) by the image -> output transform ``a``."""
  m = (_homogeneous(a) @ np.linalg.inv(_homogeneous(p)))[:2]
  return cv2.warpAffine(patch, m, (size, size), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp(image: np.ndarray, a: np.ndarray, size: int) -> np.ndarray:
  """The aligned ``size`` x ``size`` face: ``image`` warped by ``a``."""
  patch, p = extract_patch(image, a, size)
  return render(patch, p, a, size)
