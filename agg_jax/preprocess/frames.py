"""Frame sampling from videos with OpenCV (paper Sec. IV-A: the first 100 frames of each video).

``first``: frames 0..N-1, read in order. ``uniform``: N frame indices spread evenly over the
frame count that the container reports, ``round(linspace(0, total - 1, N))``, reached by
decoding every frame in order (no seeking, so the indices are exact). A video shorter than N
gives all its frames. A wanted frame that cannot be decoded (truncated file, or a header that
over-reports its length) is yielded as an error, never silently dropped.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from agg_jax.preprocess.images import BadInput

VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg",
                        ".flv", ".wmv", ".3gp", ".ts"})
SAMPLINGS = ("first", "uniform")

# Corrupt files: their reasons go to the manifest, not to FFmpeg's and OpenCV's console logs.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


@dataclass(frozen=True)
class Frame:
  """One wanted frame: ``rgb`` (H, W, 3) uint8, or None with ``error`` saying why."""
  index: int
  rgb: np.ndarray | None
  error: str | None = None


@dataclass(frozen=True)
class VideoInfo:
  frame_count: int  # As reported by the container; may be 0 or wrong.
  fps: float
  width: int
  height: int


def sample_indices(total: int, n: int, sampling: str) -> list[int]:
  """The frame indices to keep out of ``total`` frames (``total`` <= 0: unknown)."""
  if sampling not in SAMPLINGS:
    raise ValueError(f"sampling={sampling!r}: use one of {SAMPLINGS}")
  if sampling == "first" or total <= 0:
    return list(range(n if total <= 0 else min(n, total)))
  if total <= n:
    return list(range(total))
  return sorted(set(np.round(np.linspace(0, total - 1, n)).astype(int).tolist()))


def read_frames(path: str | os.PathLike, n: int, sampling: str) -> tuple[VideoInfo,
                                                                         Iterator[Frame]]:
  """Opens ``path`` and returns its info and an iterator over the sampled frames.

  Raises BadInput when the file is empty, cannot be opened, or holds no decodable frame.
  """
  path = os.fspath(path)
  if os.path.getsize(path) == 0:
    raise BadInput("empty file (0 bytes)")
  cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
  if not cap.isOpened():
    cap.release()
    raise BadInput("cannot open video: OpenCV/FFmpeg cannot read this file (corrupt, truncated, "
                   "not a video, or a container without video frames)")
  info = VideoInfo(frame_count=max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))),
                   fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
                   width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                   height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
  ok, first = cap.read()
  if not ok or first is None or first.size == 0:
    cap.release()
    raise BadInput("video has no decodable frames" + (
        f" (header reports {info.frame_count})" if info.frame_count else ""))
  return info, _frames(cap, first, sample_indices(info.frame_count, n, sampling), info)


def _frames(cap, first: np.ndarray, wanted: list[int], info: VideoInfo) -> Iterator[Frame]:
  """Decodes in order up to the last wanted index, yielding the wanted frames."""
  try:
    wanted_set, frame = set(wanted), first
    for index in range(max(wanted, default=-1) + 1):
      if index > 0:
        if index in wanted_set:
          ok, frame = cap.read()
          ok = ok and frame is not None and frame.size > 0
        else:
          ok = cap.grab()
        if not ok:
          if info.frame_count > index:  # Frames the header promises are missing: report each.
            reason = (f"frame cannot be decoded: the video stops at frame {index} although its "
                      f"header reports {info.frame_count} frames (truncated or corrupt file)")
            yield from (Frame(j, None, reason) for j in wanted if j >= index)
          return  # Otherwise the video is just shorter than the frames asked for.
      if index in wanted_set:
        yield Frame(index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
  finally:
    cap.release()
