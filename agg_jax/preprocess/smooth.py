"""Temporal smoothing of the alignment in a video, so that aligned frames do not jitter.

Each frame's pose (left-eye x, y, eye-line angle, log extent; see ``align``) is replaced by a
Gaussian-weighted local *linear* fit over the frames of its track: unlike a plain moving
average it follows steady motion without lag, also at a track's ends. Frames without a face are
left out of the fit. A track ends (and the next starts afresh) at a gap of more than MAX_GAP
frames without a face, where the eye jumps by more than JUMP extents or the extent changes by
more than 25% between consecutive faces, or at a switch (``switched``: a scene cut, or the
detector moving to another face) anywhere since the previous face.

The extent comes from the detector box, whose size jumps between the levels of the detector's
image pyramid (by up to ~20% from one frame to the next). Within a track, the extent is therefore
taken from the landmarks' size (``landmarks.face_size``) times the track's median ratio of box
extent to landmark size: the scale follows the face smoothly, and over the track it is the
box-with-margins scale of ``align``. Tracks are cut using that landmark size as well
(``LANDMARK_TO_EXTENT`` puts it in extent units: the median ratio over 225 faces-mini faces).
"""

import numpy as np

SIGMAS = (1.0, 1.0, 2.0, 3.0)  # Frames, for eye x, eye y, angle, log extent.
LANDMARK_TO_EXTENT = 3.6
MAX_GAP = 5
JUMP = 0.25


def track_ids(poses: np.ndarray, log_sizes: np.ndarray,
              switched: np.ndarray | None = None) -> np.ndarray:
  """Track number per frame (-1 where there is no face). ``poses``: (T, 4), NaN rows = no face;
  ``log_sizes``: log ``face_size`` per frame; ``switched``: (T,) bool."""
  poses = np.array(poses, dtype=np.float64)
  poses[:, 3] = np.asarray(log_sizes) + np.log(LANDMARK_TO_EXTENT)
  ids = np.full(len(poses), -1)
  track, last = -1, None
  for t, p in enumerate(poses):
    if np.isnan(p).any():
      continue
    new = (last is None or t - last > MAX_GAP + 1
           or (switched is not None and bool(np.any(switched[last + 1:t + 1]))))
    if not new:
      q = poses[last]
      size = np.exp(q[3])
      new = (np.hypot(p[0] - q[0], p[1] - q[1]) > JUMP * size * (t - last)
             or abs(p[3] - q[3]) > np.log(1.25))
    track += int(new)
    ids[t], last = track, t
  return ids


def smooth_poses(poses: np.ndarray, log_sizes: np.ndarray, ids: np.ndarray,
                 strength: float = 1.0) -> np.ndarray:
  """Smoothed poses with the landmark-anchored extent; ``strength`` scales SIGMAS (0: the poses
  as they are, frame by frame). NaN rows stay NaN."""
  poses = np.asarray(poses, dtype=np.float64)
  out = poses.copy()
  if strength <= 0:
    return out
  log_sizes = np.asarray(log_sizes, dtype=np.float64)
  for track in np.unique(ids[ids >= 0]):
    frames = np.flatnonzero(ids == track)
    values = poses[frames].copy()
    values[:, 3] = log_sizes[frames] + np.median(values[:, 3] - log_sizes[frames])
    values[:, 2] = np.unwrap(values[:, 2])
    for k, sigma in enumerate(SIGMAS):
      out[frames, k] = _local_linear(frames.astype(np.float64), values[:, k], sigma * strength)
  return out


def _local_linear(t: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
  """At each t, the value of a Gaussian-weighted least-squares line through (t, y)."""
  d = t[None, :] - t[:, None]  # d[i, j] = t_j - t_i
  w = np.exp(-0.5 * (d / sigma) ** 2)
  s0, s1, s2 = w.sum(1), (w * d).sum(1), (w * d * d).sum(1)
  t0, t1 = (w * y).sum(1), (w * d * y).sum(1)
  det = s0 * s2 - s1 * s1
  with np.errstate(invalid="ignore", divide="ignore"):
    fit = (s2 * t0 - s1 * t1) / det
  return np.where(det > 1e-9 * s0 * s0, fit, t0 / s0)
