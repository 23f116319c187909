"""One source (a photo or a video) to aligned PNGs and its manifest records (paper Sec. III-A,
IV-A): frames -> largest face (``detect``) -> landmarks, refined on the aligned face until
they settle (``Processor._locate``) and checked for plausibility (``quality``) -> pose
(``align``) -> in videos, smoothed over time (``smooth``) -> warp -> PNG. A face whose eye
centre falls outside the picture is recorded as ``no_face`` with a ``note``: it cannot be
aligned on its eye. Photos and video frames go through the same steps, so real and fake data
share one preprocessing.

``Processor(settings, out_dir)(source)`` never raises: whatever goes wrong becomes the status of
the frame or file it concerns (``error: <reason>``), and the other frames go on.
"""

import os
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from agg_jax import fileio
from agg_jax.preprocess import align, quality, smooth
from agg_jax.preprocess.detect import FaceDetector
from agg_jax.preprocess.frames import read_frames
from agg_jax.preprocess.images import MAX_PIXELS, BadInput, read_image
from agg_jax.preprocess.landmarks import LEFT_EYE, Landmarker, eye_centers, face_size
from agg_jax.preprocess.sources import Source

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


def make_record(source: Source, settings: Settings, frame=None, status="ok", output=None,
                faces=0, det=None, landmarks=None, affine=None, **extra) -> dict:
  """One manifest record (keys: see ``manifest``)."""
  record = {
      "source": source.path, "frame": frame, "status": status, "output": output,
      "faces": faces, "box": _round(None if det is None else det.box),
      "landmarks": _round(landmarks), "affine": _round(affine, 6),
      "eye": _round(None if landmarks is None else landmarks[42:48].mean(0)),
      "kind": source.kind, "detector": None if det is None else det.detector,
      "search": None if det is None else det.search,
  }
  record.update(extra)
  if source.warning:
    record["warning"] = source.warning
  record["settings"] = settings.key()
  return record


class Processor:
  """Processes sources one by one; holds the dlib models (load once per worker)."""

  def __init__(self, settings: Settings, out_dir: str):
    self.settings = settings
    self.out_dir = out_dir
    self.detector = FaceDetector(settings.detector)
    self.landmarker = Landmarker()

  def __call__(self, source: Source) -> list[dict]:
    try:
      if source.kind == "video":
        return self._video(source)
      return self._image(source)
    except BadInput as e:
      return [self._record(source, status=f"error: {e}")]
    except Exception as e:  # pylint: disable=broad-except  # One bad file never stops a run.
      return [self._record(source, status=f"error: unexpected {type(e).__name__}: {e}")]

  def _record(self, source: Source, frame=None, status="ok", output=None, faces=0, det=None,
              landmarks=None, affine=None, **extra) -> dict:
    return make_record(source, self.settings, frame, status, output, faces, det, landmarks,
                       affine, **extra)

  def _write(self, relative: str, rgb: np.ndarray) -> None:
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
      raise OSError(f"PNG encoding failed for {relative}")
    fileio.atomic_write_bytes(os.path.join(self.out_dir, relative), png.tobytes())

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

  def _image(self, source: Source) -> list[dict]:
    rgb = read_image(source.path, self.settings.max_pixels)
    size = self.settings.size
    extra = {"image_size": [rgb.shape[1], rgb.shape[0]]}
    det = self.detector.detect(rgb)
    if det is None:
      return [self._record(source, status="no_face", **extra)]
    landmarks, face_pose, move = self._locate(rgb, det)
    if not _eyes_inside(landmarks, rgb.shape):
      return [self._record(source, status="no_face", faces=det.faces, det=det,
                           landmarks=landmarks, note=EYES_OUTSIDE, **extra)]
    a = align.matrix(face_pose, size)
    output = source.output + ".png"
    self._write(output, align.warp(rgb, a, size))
    return [self._record(source, output=output, faces=det.faces, det=det, landmarks=landmarks,
                         affine=a, quality=quality.assess(landmarks, det.box, move), **extra)]

  def _video(self, source: Source) -> list[dict]:
    s = self.settings
    info, frames = read_frames(source.path, s.frames, s.sampling)
    extra = {"image_size": [info.width, info.height], "frames_total": info.frame_count}
    entries = []  # Per frame: index, detection, landmarks, pose, patch, error, switched.
    previous, reference, since_whole, misses, thumb = None, None, 0, 0, None
    for frame in frames:
      entry = {"index": frame.index, "det": None, "error": frame.error, "switched": False}
      entries.append(entry)
      if frame.rgb is None:
        continue
      try:
        last_thumb, thumb = thumb, _thumbnail(frame.rgb)
        if last_thumb is not None and np.abs(thumb - last_thumb).mean() > CUT_THRESHOLD:
          previous, since_whole, misses = None, 0, 0  # A cut: search the whole frame afresh.
          entry["switched"] = True
        det = None
        if previous is not None and since_whole < s.redetect_every:
          det = self.detector.track(frame.rgb, previous.box, reference)
        if det is None:
          thorough = misses < FAST_AFTER_MISSES or misses % s.redetect_every == 0
          det = self.detector.detect(frame.rgb, thorough=thorough)
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
        landmarks, face_pose, move = self._locate(frame.rgb, det)
        if not _eyes_inside(landmarks, frame.rgb.shape):
          entry.update(outside=(det, landmarks))
          misses += 1
          continue
        patch, p = align.extract_patch(frame.rgb, align.matrix(face_pose, s.size), s.size,
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
    records = []
    for entry, track, face_pose in zip(entries, ids, smoothed):
      index = entry["index"]
      if entry["error"]:
        records.append(self._record(source, index, f"error: {entry['error']}", **extra))
      elif entry["det"] is None and "outside" in entry:
        det, landmarks = entry["outside"]
        records.append(self._record(source, index, "no_face", faces=det.faces, det=det,
                                    landmarks=landmarks, note=EYES_OUTSIDE, **extra))
      elif entry["det"] is None:
        records.append(self._record(source, index, "no_face", **extra))
      else:
        a = align.matrix(face_pose, s.size)
        output = f"{source.output}/{index:06d}.png"
        try:
          self._write(output, align.render(entry["patch"], entry["p"], a, s.size))
          records.append(self._record(
              source, index, "ok", output, entry["det"].faces, entry["det"],
              entry["landmarks"], a, track=int(track), quality=entry["quality"], **extra))
        except Exception as e:  # pylint: disable=broad-except
          records.append(self._record(source, index, f"error: {type(e).__name__}: {e}",
                                      **extra))
    return records


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
