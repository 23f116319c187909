"""Face detection with dlib (paper Sec. IV-A: "a dlib-based face detector"); the largest face wins.

``hog`` (dlib's frontal HOG detector, the default) or ``cnn`` (dlib's MMOD CNN, slow on CPU).
Boxes are (left, top, right, bottom) floats in source pixels and always in *HOG units*: a CNN
box is mapped onto the box HOG gives for the same face (width x1.13, centre moved right 0.05 and
down 0.09 of the CNN width: medians over 225 faces-mini faces that both detectors found), so
the alignment, whose scale comes from the box, frames a face the same way whichever detector
found it. The detector that found each face is recorded.

A whole image (a photo, or a video frame without a usable track) goes through a cascade that
stops at the first tier that finds a face:
  1. HOG on the image (downscaled so its longer side is at most 1024 px) padded with black by
     25% of its longer side: tight crops, where the face fills the picture, need that context
     (without it HOG misses them, or finds a small false face inside the big one);
  2. HOG after one 2x upsampling, for faces of 40-80 px (images of at most 800 px);
  3. the CNN on the padded image at 256 px (tight crops), and
  4. the CNN on the image at 512 px (masked, painted or small faces), when its model file is
     installed (each CNN tier costs 0.3-1.3 s on a CPU core, paid only where HOG found nothing).
With ``cnn``: the CNN at up to 640 px, then tier 3. In a video, the face of the previous
frame is looked for first in a square of 2.2x its box around it, resampled so the face is about
100 px (``track``), which is ~5x cheaper than a whole 640x480 frame; a long stretch of
faceless frames is searched with the first tier only (``thorough=False``).
The largest face (box area) of the first tier that finds any is kept (``detect_all`` gives them
all, largest first); ``faces`` counts the faces that tier found in the region it searched.
"""

import os
from dataclasses import dataclass

import cv2
import dlib
import numpy as np

from agg_jax.preprocess import dlib_models

DETECTORS = ("hog", "cnn")
CNN_TO_HOG = (1.13, 0.05, 0.09)  # Width ratio, centre shift x and y in CNN widths.
MAX_SIDE = 1024
TRACK_REGION = 2.2  # Side of the tracking region, in previous box widths.
TRACK_FACE_PX = 100  # Face width the tracking region is resampled to (HOG finds >= 80 px).


@dataclass(frozen=True)
class Detection:
  box: np.ndarray  # (4,) float: left, top, right, bottom, in HOG units.
  faces: int  # Faces found by the tier that found this one, in the region it searched.
  detector: str  # "hog" or "cnn".
  search: str  # "image" (whole image) or "track" (region around the previous face).


class FaceDetector:
  """``detect(rgb)`` for whole images, ``track(rgb, previous_box)`` for video frames."""

  def __init__(self, kind: str = "hog", cnn_fallback: bool = True):
    if kind not in DETECTORS:
      raise ValueError(f"detector={kind!r}: use one of {DETECTORS}")
    self.kind = kind
    self._hog = dlib.get_frontal_face_detector()
    self._cnn = None
    self._cnn_path = None
    if kind == "cnn" or cnn_fallback:
      try:
        self._cnn_path = dlib_models.find_model(dlib_models.CNN_DETECTOR)
      except dlib_models.ModelNotFoundError:
        if kind == "cnn":
          raise

  @property
  def has_cnn(self) -> bool:
    return self._cnn_path is not None

  def _boxes(self, image: np.ndarray, detector: str, upsample: int) -> np.ndarray:
    """All faces in ``image`` as an (n, 4) float array in HOG units."""
    if detector == "hog":
      rects = self._hog(image, upsample)
      return np.array([(r.left(), r.top(), r.right(), r.bottom()) for r in rects],
                      dtype=np.float64).reshape(-1, 4)
    if self._cnn is None:
      self._cnn = dlib.cnn_face_detection_model_v1(os.fspath(self._cnn_path))
    ratio, dx, dy = CNN_TO_HOG
    out = []
    for d in self._cnn(image, upsample):
      r = d.rect
      w = r.right() - r.left()
      cx, cy = (r.left() + r.right()) / 2 + dx * w, (r.top() + r.bottom()) / 2 + dy * w
      half = ratio * w / 2
      out.append((cx - half, cy - half, cx + half, cy + half))
    return np.array(out, dtype=np.float64).reshape(-1, 4)

  def _search(self, rgb, detector, scale, pad, upsample) -> np.ndarray:
    """Faces in ``rgb`` resized by ``scale`` and padded by ``pad`` x its longer side."""
    image = _resize(rgb, scale)
    p = int(round(pad * max(image.shape[:2])))
    if p:
      image = cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
    return (self._boxes(image, detector, upsample) - p) / scale

  def detect(self, rgb: np.ndarray, thorough: bool = True) -> Detection | None:
    """The largest face in a whole image (the cascade above; only its first tier when not
    ``thorough``), or None."""
    found = self.detect_all(rgb, thorough)
    return found[0] if found else None

  def detect_all(self, rgb: np.ndarray, thorough: bool = True) -> list[Detection]:
    """Every face the first tier of the cascade that finds any finds, largest first (ties in
    the detector's order): ``detect`` is its first."""
    longer = max(rgb.shape[:2])
    base = min(1.0, MAX_SIDE / longer)
    if self.kind == "hog":
      tiers = [("hog", base, 0.25, 0)]
      if longer * base <= 800:
        tiers.append(("hog", base, 0.0, 1))
      if self.has_cnn:
        tiers += [("cnn", 256 / longer, 0.25, 0), ("cnn", 512 / longer, 0.0, 0)]
    else:
      tiers = [("cnn", min(1.0, 640 / longer), 0.0, 0), ("cnn", 256 / longer, 0.25, 0)]
    if not thorough:
      tiers = tiers[:1]
    for detector, scale, pad, upsample in tiers:
      boxes = self._search(rgb, detector, scale, pad, upsample)
      if len(boxes):
        return [Detection(boxes[i], len(boxes), detector, "image") for i in _by_size(boxes)]
    return []

  def hog(self, rgb: np.ndarray) -> Detection | None:
    """The largest face HOG alone finds in ``rgb`` as it is (no cascade), or None."""
    boxes = self._boxes(rgb, "hog", 0)
    return Detection(_largest(boxes), len(boxes), "hog", "image") if len(boxes) else None

  def track(self, rgb: np.ndarray, previous_box, reference_width: float | None = None
            ) -> Detection | None:
    """The largest face in the region around ``previous_box`` (a video's last face), or None.

    The region is resampled so that ``reference_width`` (default: the previous box's width)
    becomes TRACK_FACE_PX. Pass the width of the last whole-frame detection: resampling by the
    previous box would feed the detector's size quantisation back into the next frame (boxes
    drift by a few percent per frame, then jump back).
    """
    l, t, r, b = previous_box
    w = max(r - l, 1.0)
    reference_width = reference_width or w
    cx, cy = (l + r) / 2, (t + b) / 2
    half = TRACK_REGION * w / 2
    h_img, w_img = rgb.shape[:2]
    x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
    x1, y1 = min(w_img, int(np.ceil(cx + half))), min(h_img, int(np.ceil(cy + half)))
    if x1 - x0 < 16 or y1 - y0 < 16:
      return None
    detector = self.kind
    boxes = self._search(rgb[y0:y1, x0:x1], detector, TRACK_FACE_PX / reference_width, 0.0, 0)
    if not len(boxes):
      return None
    return Detection(_largest(boxes) + (x0, y0, x0, y0), len(boxes), detector, "track")


def _by_size(boxes: np.ndarray) -> np.ndarray:
  """Indices of ``boxes`` by decreasing area; equal areas keep their order (as argmax does)."""
  areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  return np.argsort(-areas, kind="stable")


def _largest(boxes: np.ndarray) -> np.ndarray:
  return boxes[int(_by_size(boxes)[0])]


def _resize(rgb: np.ndarray, scale: float) -> np.ndarray:
  if abs(scale - 1.0) < 1e-3:
    return rgb
  h, w = rgb.shape[:2]
  size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
  return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
