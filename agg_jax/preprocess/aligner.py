"""Photos and video frames to aligned faces, in memory (paper Sec. III-A, IV-A): frames -> largest
face (``detect``) -> landmarks, refined on the aligned face until they settle
(``Aligner._locate``) and checked for plausibility (``quality``) -> pose (``align``) -> in
videos, smoothed over time (``smooth``) -> warp. A face whose eye centre falls outside the
picture is ``no_face`` with a ``note``: it cannot be aligned on its eye. Photos and video frames
go through the same steps, so real and fake data share one preprocessing.

``Aligner(settings)`` loads the dlib models once; ``image(rgb)`` (the largest face),
``faces(rgb)`` (every face), ``video(frames)`` and ``file(path)`` give ``AlignedFace`` values:
the status, the face (uint8 RGB, ``settings.size`` square) and the alignment fields of a manifest
record. Nothing is written: ``pipeline`` turns them into PNGs and records. Whatever goes wrong
with one input becomes the status of the frame or file it concerns (``error: <reason>``), and
the other frames go on.
"""

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from agg_jax.preprocess import align, quality, smooth
from agg_jax.preprocess.detect import FaceDetector
from agg_jax.preprocess.frames import Frame, VideoInfo, read_frames
from agg_jax.preprocess.images import MAX_PIXELS, BadInput, read_image
from agg_jax.preprocess.landmarks import LEFT_EYE, Landmarker, eye_centers, face_size
from agg_jax.preprocess.sources import kind_of

EYES_OUTSIDE = "a face was found but an eye centre lies outside the image (face cut by the border)"
REFINE_SIZE = 256  # Resolution of the aligned face that the landmarks are refined on.
REFINE_PASSES = 3  # Most refinement passes on the aligned face.
REFINE_TOLERANCE = 0.5  # A pass's left-eye distance to the template (REFINE_SIZE px) that ends it.
VIDEO_PATCH_MARGIN = 0.4  # Extra source kept around each frame's face for the smoothed warp.
CUT_THRESHOLD = 12.0  # Mean grey-level change of a 32x24 thumbnail that marks a scene cut.
FAST_AFTER_MISSES = 3  # Consecutive faceless frames after which only plain HOG runs
# (the full cascade again every redetect_every frames).


@dataclass(frozen=True)
class Settings:
  size: int = 256
  frames: int = 100
  sampling: str = "first"
  detector: str = "hog"
  smooth: float = 1.0  # Multiplies smooth.SIGMAS; 0 turns temporal smoothing off.
  redetect_every: int = 25  # Video frames between whole-frame detections while tracking.
  max_pixels: int = MAX_PIXELS

  def key(self) -> dict:
    """The options that shape the outputs; a manifest holds one set of them."""
    d = asdict(self)
    d.pop("max_pixels")
    return d


def _round(a, digits=2):
  return None if a is None else np.round(np.asarray(a, dtype=np.float64), digits).tolist()


@dataclass(frozen=True, eq=False)
class AlignedFace:
  """One photo's or video frame's alignment. Arrays hold full precision, in source pixels;
  ``fields()`` gives them as a manifest record holds them (keys: see ``manifest``)."""
  status: str  # "ok", "no_face" or "error: <reason>".
  face: np.ndarray | None = None  # (size, size, 3) uint8 RGB; None unless ok.
  frame: int | None = None  # Frame index in the video; None for a photo.
  faces: int = 0  # Faces the detector found.
  box: np.ndarray | None = None  # (4,) left, top, right, bottom of the face used, HOG units.
  landmarks: np.ndarray | None = None  # (68, 2), as refined on the aligned face.
  affine: np.ndarray | None = None  # (2, 3) source -> face; in videos from the smoothed pose.
  detector: str | None = None  # "hog" or "cnn".
  search: str | None = None  # "image" or "track".
  note: str | None = None  # Why a face that was found is not used.
  track: int | None = None  # Videos, ok faces: the track the pose was smoothed along.
  quality: list[str] | None = None  # Ok faces: reasons to doubt the landmark fit ([]: none).
  image_size: tuple[int, int] | None = None  # Source width, height.
  frames_total: int | None = None  # Videos: the frame count the header reports.

  @property
  def ok(self) -> bool:
    return self.status == "ok"

  @property
  def eye(self) -> np.ndarray | None:
    """The left-eye centre (``landmarks.eye_centers``)."""
    return None if self.landmarks is None else self.landmarks[LEFT_EYE].mean(0)

  def fields(self) -> dict:
    """The alignment fields of the record, rounded as the manifest holds them: faces, box,
    landmarks, affine, eye, detector, search, then note, track, quality, image_size and
    frames_total where set."""
    fields = {"faces": self.faces, "box": _round(self.box), "landmarks": _round(self.landmarks),
              "affine": _round(self.affine, 6), "eye": _round(self.eye),
              "detector": self.detector, "search": self.search}
    for key in ("note", "track", "quality", "image_size", "frames_total"):
      value = getattr(self, key)
      if value is not None:
        fields[key] = list(value) if key == "image_size" else value
    return fields

  def failed(self, reason: str) -> "AlignedFace":
    """The same frame as an error: ``error: <reason>``, nothing kept but where it comes from."""
    return AlignedFace(f"error: {reason}", frame=self.frame, image_size=self.image_size,
                       frames_total=self.frames_total)


def _found(status: str, det, landmarks: np.ndarray, **fields) -> AlignedFace:
  return AlignedFace(status, faces=det.faces, box=det.box, landmarks=landmarks,
                     detector=det.detector, search=det.search, **fields)


def _checked(rgb) -> np.ndarray:
  rgb = np.asarray(rgb)
  if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
    raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.dtype} {rgb.shape}")
  return np.ascontiguousarray(rgb)


class Aligner:
  """Aligns photos and video frames in memory; holds the dlib models (load once per process).

  ``image(rgb)`` and ``video(frames)`` take decoded RGB arrays, ``file(path)`` reads a photo or
  a video's sampled frames (``settings.frames``, ``settings.sampling``) with the guards of
  ``images`` and ``frames``. None of them raises for a bad input or a failed alignment.
  """

  def __init__(self, settings: Settings = Settings()):
    self.settings = settings
    self.detector = FaceDetector(settings.detector)
    self.landmarker = Landmarker()

  def file(self, path: str | os.PathLike, kind: str | None = None) -> list[AlignedFace]:
    """A photo's face (one) or a video's sampled frames' (one per frame, in order); ``kind``
    ("image" or "video") defaults to what ``sources.kind_of`` finds. A file that cannot be read
    gives one face with an ``error:`` status (frame None)."""
    s = self.settings
    try:
      if (kind or kind_of(path)[0]) == "video":
        info, frames = read_frames(path, s.frames, s.sampling)
        return self.video(frames, info)
      return [self.image(read_image(path, s.max_pixels))]
    except BadInput as e:
      return [AlignedFace(f"error: {e}")]
    except Exception as e:  # pylint: disable=broad-except  # One bad file never stops a run.
      return [AlignedFace(f"error: unexpected {type(e).__name__}: {e}")]

  def image(self, rgb: np.ndarray) -> AlignedFace:
    """The aligned largest face of a photo ((H, W, 3) uint8 RGB; ValueError otherwise)."""
    rgb = _checked(rgb)
    try:
      return self._image(rgb)
    except Exception as e:  # pylint: disable=broad-except
      return AlignedFace(f"error: unexpected {type(e).__name__}: {e}")

  def faces(self, rgb: np.ndarray) -> list[AlignedFace]:
    """Every face of a photo, largest first, each aligned as ``image`` aligns the largest
    (``faces(rgb)[0]`` is ``image(rgb)``); one ``no_face`` (or ``error:``) face when none is."""
    rgb = _checked(rgb)
    try:
      found = self.detector.detect_all(rgb)
    except Exception as e:  # pylint: disable=broad-except
      return [AlignedFace(f"error: unexpected {type(e).__name__}: {e}")]
    if not found:
      return [AlignedFace("no_face", image_size=(rgb.shape[1], rgb.shape[0]))]
    faces = []
    for det in found:
      try:
        faces.append(self._align(rgb, det))
      except Exception as e:  # pylint: disable=broad-except  # The other faces go on.
        faces.append(AlignedFace(f"error: unexpected {type(e).__name__}: {e}"))
    return faces

  def _locate(self, rgb: np.ndarray, det) -> tuple[np.ndarray, np.ndarray, float]:
    """(landmarks, pose, last eye move) of the detected face, refined on the aligned face.

    The shape predictor is least reliable on tilted, oddly framed faces and most on upright
    ones at the training scale, so the face is aligned with its current landmarks, the
    landmarks are found again on that aligned face and mapped back; the current landmarks are
    the mean of the passes so far. Passes stop when the left eye of a pass lies within
    REFINE_TOLERANCE output px of the template (at most REFINE_PASSES). The box the passes
    fit in is the one HOG finds on the first aligned face (a box found on a levelled face suits
    the predictor better than one found on a rolled face), else the detector box, carried
    into each aligned face. The eye and the eye line come from the landmarks, the scale stays
    the detector box's; the returned move (output px, last pass) tells whether the fit settled.
    On faces-mini, against one refinement pass, this lowers the spread (x/y) of the left eye
    re-detected on the outputs from 2.89/1.77 to 2.32/1.53 px (fresh detection) and from
    1.17/0.74 to 1.03/0.95 px (in the face region; ``bench/bench_preprocess.py``): some 3/4
    views and rolled faces move from 8-55 px off to within 5 px; averaging damps the wobble
    of fits on glasses and closed eyes. Fits that stay unsettled are flagged (``quality``).
    Finding the passes' box with the whole-image cascade instead of plain HOG (what a
    re-detection on the output runs) was tried: 2.22/1.41 px overall, SD 2.1 faces 2.86/2.59 ->
    1.81/2.17 but Yonsei 1.02/1.00 -> 1.57/1.14 (without wrong-face boxes), a turned face
    (tests) 10 px off, photos 15% and video frames 26% slower; not taken.
    """
    landmarks = self.landmarker(rgb, det.box)
    box, passes, move = det.box, [], np.inf
    for _ in range(REFINE_PASSES):
      a = align.matrix(align.pose(det.box, landmarks), REFINE_SIZE)
      aligned = align.warp(rgb, a, REFINE_SIZE)
      if not passes:
        again = self.detector.hog(aligned)
        box = box if again is None else carried_box(_invert(a), again.box)
      found = self.landmarker(aligned, carried_box(a, box))
      move = float(np.linalg.norm(found[LEFT_EYE].mean(axis=0) - align.template(REFINE_SIZE)))
      passes.append(align.transform(_invert(a), found))
      landmarks = np.mean(passes, axis=0)
      if move < REFINE_TOLERANCE:
        break
    return landmarks, align.pose(det.box, landmarks), move

  def _image(self, rgb: np.ndarray) -> AlignedFace:
    det = self.detector.detect(rgb)
    if det is None:
      return AlignedFace("no_face", image_size=(rgb.shape[1], rgb.shape[0]))
    return self._align(rgb, det)

  def _align(self, rgb: np.ndarray, det) -> AlignedFace:
    """The photo's face that ``det`` found, aligned."""
    size = self.settings.size
    image_size = (rgb.shape[1], rgb.shape[0])
    landmarks, face_pose, move = self._locate(rgb, det)
    if not _eyes_inside(landmarks, rgb.shape):
      return _found("no_face", det, landmarks, note=EYES_OUTSIDE, image_size=image_size)
    a = align.matrix(face_pose, size)
    return _found("ok", det, landmarks, face=align.warp(rgb, a, size), affine=a,
                  quality=quality.assess(landmarks, det.box, move), image_size=image_size)

  def video(self, frames: Iterable[Frame | np.ndarray], info: VideoInfo | None = None
            ) -> list[AlignedFace]:
    """The aligned faces of a video's frames, one per frame, in order; the alignment is tracked
    and smoothed over time (``smooth``).

    ``frames``: ``frames.Frame`` values (what ``frames.read_frames`` yields: an index and an RGB
    array, or a decoding error) or bare RGB arrays (indexed by position). ``info`` (from
    ``read_frames``) gives every face the container's ``image_size`` and ``frames_total``;
    without it ``image_size`` is each decoded frame's own.
    """
    s = self.settings
    entries = []  # Per frame: index, detection, landmarks, pose, patch, error, switched.
    previous, reference, since_whole, misses, thumb = None, None, 0, 0, None
    for position, frame in enumerate(frames):
      if not isinstance(frame, Frame):
        frame = Frame(position, frame)
      rgb = None if frame.rgb is None else _checked(frame.rgb)
      entry = {"index": frame.index, "det": None, "error": frame.error, "switched": False,
               "size": None if rgb is None else (rgb.shape[1], rgb.shape[0])}
      entries.append(entry)
      if rgb is None:
        continue
      try:
        last_thumb, thumb = thumb, _thumbnail(rgb)
        if last_thumb is not None and np.abs(thumb - last_thumb).mean() > CUT_THRESHOLD:
          previous, since_whole, misses = None, 0, 0  # A cut: search the whole frame afresh.
          entry["switched"] = True
        det = None
        if previous is not None and since_whole < s.redetect_every:
          det = self.detector.track(rgb, previous.box, reference)
        if det is None:
          thorough = misses < FAST_AFTER_MISSES or misses % s.redetect_every == 0
          det = self.detector.detect(rgb, thorough=thorough)
          since_whole = 0
          entry["switched"] |= bool(det is not None and previous is not None
                                    and iou(det.box, previous.box) < 0.3)
        since_whole += 1
        if det is None:
          misses += 1
          continue
        misses, previous = 0, det
        if det.search == "image":
          reference = det.box[2] - det.box[0]
        landmarks, face_pose, move = self._locate(rgb, det)
        if not _eyes_inside(landmarks, rgb.shape):
          entry.update(outside=(det, landmarks))
          misses += 1
          continue
        patch, p = align.extract_patch(rgb, align.matrix(face_pose, s.size), s.size,
                                       VIDEO_PATCH_MARGIN)
        entry.update(det=det, landmarks=landmarks, pose=face_pose, patch=patch, p=p,
                     log_size=np.log(face_size(landmarks)),
                     quality=quality.assess(landmarks, det.box, move))
      except Exception as e:  # pylint: disable=broad-except
        entry["error"] = f"unexpected {type(e).__name__}: {e}"
    poses = np.array([e["pose"] if "pose" in e else [np.nan] * 4 for e in entries])
    poses = poses.reshape(-1, 4)
    log_sizes = np.array([e.get("log_size", np.nan) for e in entries])
    ids = smooth.track_ids(poses, log_sizes, np.array([e["switched"] for e in entries]))
    smoothed = smooth.smooth_poses(poses, log_sizes, ids, s.smooth)
    faces = []
    for entry, track, face_pose in zip(entries, ids, smoothed):
      where = {"frame": entry["index"], "image_size": entry["size"]}
      if info is not None:
        where.update(image_size=(info.width, info.height), frames_total=info.frame_count)
      if entry["error"]:
        faces.append(AlignedFace(f"error: {entry['error']}", **where))
      elif entry["det"] is None and "outside" in entry:
        det, landmarks = entry["outside"]
        faces.append(_found("no_face", det, landmarks, note=EYES_OUTSIDE, **where))
      elif entry["det"] is None:
        faces.append(AlignedFace("no_face", **where))
      else:
        a = align.matrix(face_pose, s.size)
        try:
          face = align.render(entry.pop("patch"), entry["p"], a, s.size)
        except Exception as e:  # pylint: disable=broad-except
          faces.append(AlignedFace(f"error: {type(e).__name__}: {e}", **where))
          continue
        faces.append(_found("ok", entry["det"], entry["landmarks"], face=face, affine=a,
                            track=int(track), quality=entry["quality"], **where))
    return faces


def _eyes_inside(landmarks: np.ndarray, shape) -> bool:
  """Whether both eye centres lie in the image (dlib extrapolates landmarks of a face cut by the
  border; an eye outside the picture cannot anchor the alignment)."""
  eyes = np.array(eye_centers(landmarks))
  return bool(np.all(eyes >= 0) and np.all(eyes[:, 0] < shape[1]) and np.all(eyes[:, 1] < shape[0]))


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
  grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
  return cv2.resize(grey, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32)


def iou(a, b) -> float:
  """Intersection over union of two (left, top, right, bottom) boxes."""
  iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = iw * ih
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def carried_box(a: np.ndarray, box) -> tuple[float, float, float, float]:
  """The axis-aligned square that the square ``box`` becomes under the similarity ``a`` (same
  centre, side times the scale): where a face box lies in the aligned face, or back."""
  centre = align.transform(a, [[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]])[0]
  half = (box[2] - box[0]) * np.sqrt(abs(np.linalg.det(a[:, :2]))) / 2
  return (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)


def _invert(a: np.ndarray) -> np.ndarray:
  return np.linalg.inv(np.vstack([a, [0.0, 0.0, 1.0]]))[:2]
