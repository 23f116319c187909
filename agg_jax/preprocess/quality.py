"""Plausibility checks of a 68-point landmark fit, recorded as a face's ``quality`` in the manifest.

dlib's shape predictor always returns 68 points, even on faces it cannot fit (3/4 views, heavy
sunglasses, strong roll); the alignment then rests on a wrong eye. These checks flag fits whose
geometry is implausible for a face, so that users can filter them; the face stays ``ok``.
Bounds lie at or just outside the 0.5th / 99.5th percentiles over the 1,389 faces of
faces-mini; 65 of them (4.7%) get at least one reason.
"""

import numpy as np

from agg_jax.preprocess.landmarks import LEFT_EYE, RIGHT_EYE, eye_centers

EYE_DISTANCE = (0.30, 0.55)  # Eye-centre distance / detector box width.
NOSE_TILT = 25.0  # Most degrees between the nose bridge (points 27-30) and the eye line's normal.
EYE_WIDTH_RATIO = 0.67  # Least narrower / wider eye width (corner to corner).
EYE_SPREAD = 0.19  # Most RMS spread of an eye's six points / eye-centre distance.
UNSETTLED = 2.0  # Output px the left eye still moved in the last refinement pass.


def measures(landmarks: np.ndarray, box) -> dict[str, float]:
  """The quantities the checks bound (see the constants)."""
  left, right = eye_centers(landmarks)
  eye_line = left - right
  distance = float(np.linalg.norm(eye_line))
  nose = landmarks[30] - landmarks[27]
  angle = np.degrees(np.arctan2(eye_line[0] * nose[1] - eye_line[1] * nose[0], eye_line @ nose))
  widths = [np.linalg.norm(landmarks[45] - landmarks[42]),
            np.linalg.norm(landmarks[39] - landmarks[36])]
  spread = max(_rms_spread(landmarks[LEFT_EYE]), _rms_spread(landmarks[RIGHT_EYE]))
  return {"eye_distance": distance / max(box[2] - box[0], 1e-6),
          "nose_tilt": float(abs(angle - 90.0)),
          "eye_width_ratio": float(min(widths) / max(max(widths), 1e-6)),
          "eye_spread": spread / max(distance, 1e-6)}


def assess(landmarks: np.ndarray, box, move: float = 0.0) -> list[str]:
  """Reasons to doubt the fit (empty: plausible). ``move``: the left eye's move in the last
  refinement pass, output px."""
  m = measures(landmarks, box)
  reasons = []
  if not EYE_DISTANCE[0] <= m["eye_distance"] <= EYE_DISTANCE[1]:
    reasons.append(f"eye distance {m['eye_distance']:.2f} box widths (plausible: "
                   f"{EYE_DISTANCE[0]}-{EYE_DISTANCE[1]})")
  if m["nose_tilt"] > NOSE_TILT:
    reasons.append(f"nose line {m['nose_tilt']:.0f} deg off the eye line's normal "
                   f"(plausible: <= {NOSE_TILT:.0f})")
  if m["eye_width_ratio"] < EYE_WIDTH_RATIO:
    reasons.append(f"eye widths differ (ratio {m['eye_width_ratio']:.2f}): turned head")
  if m["eye_spread"] > EYE_SPREAD:
    reasons.append(f"eye points spread {m['eye_spread']:.2f} eye distances "
                   f"(plausible: <= {EYE_SPREAD})")
  if move > UNSETTLED:
    reasons.append(f"landmarks did not settle: the eye still moved {move:.1f} px")
  return reasons


def _rms_spread(points: np.ndarray) -> float:
  return float(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean()))
