"""Test videos with known motion, made from still photos (for the preprocess tests and
``bench/bench_preprocess.py``; not part of the library).

Each photo, its edges feathered, drifts over a softly textured background (a new one for each photo,
like a cut to another scene) along a smooth Lissajous path while it slowly turns (+-8 degrees) and
breathes in size (+-10%). The exact photo -> frame affine matrix of every frame is returned, so the
true position of any photo point (its eye landmarks, say) is known in every frame, and, through a
frame's alignment matrix, in every aligned output: jitter can be measured without trusting a
landmark detector.
"""

import os

import cv2
import numpy as np


def motion(t: np.ndarray, width: int, height: int) -> tuple[np.ndarray, ...]:
  """(centre x, centre y, angle in degrees, relative scale) at frame numbers ``t``."""
  cx = width / 2 + 0.18 * width * np.sin(2 * np.pi * t / 82)
  cy = height / 2 + 0.08 * height * np.sin(2 * np.pi * t / 52 + 0.6)
  angle = 8.0 * np.sin(2 * np.pi * t / 70 + 1.1)
  scale = 1.0 + 0.10 * np.sin(2 * np.pi * t / 100 + 0.3)
  return cx, cy, angle, scale


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
  """A smooth, fixed, muted texture (RGB uint8), like an out-of-focus room."""
  rng = np.random.default_rng(seed)
  noise = rng.uniform(60, 200, (height // 40 + 2, width // 40 + 2, 3)).astype(np.float32)
  noise = 0.5 * noise + 0.5 * noise.mean(axis=2, keepdims=True)  # Less saturated.
  smooth = cv2.GaussianBlur(cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR),
                            (0, 0), 12)
  return smooth.clip(0, 255).astype(np.uint8)


def make_video(photos: list[np.ndarray], path: str | os.PathLike, frames_per_photo: int = 50,
               size: tuple[int, int] = (640, 480), fps: float = 25.0, fourcc: str = "mp4v",
               photo_height: float = 0.6) -> np.ndarray:
  """Writes the video; returns the (frames, 2, 3) photo -> frame matrices.

  ``photos`` are RGB uint8 arrays, shown one after another for ``frames_per_photo`` frames each
  (the motion continues across them); each is scaled so its longer side is ``photo_height`` of
  the frame height (at relative scale 1).
  """
  width, height = size
  writer = cv2.VideoWriter(os.fspath(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
  if not writer.isOpened():
    raise OSError(f"OpenCV cannot write {path} with codec {fourcc}")
  matrices = []
  try:
    for k, photo in enumerate(photos):
      back = background(width, height, seed=k).astype(np.float32)
      ph, pw = photo.shape[:2]
      base = photo_height * height / max(ph, pw)
      yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
      edge = np.minimum(np.minimum(xx, pw - 1 - xx) / pw, np.minimum(yy, ph - 1 - yy) / ph)
      mask = np.clip(edge / 0.06, 0, 1)[..., None]  # Feathered over the outer 6%.
      for t in range(k * frames_per_photo, (k + 1) * frames_per_photo):
        cx, cy, angle, scale = motion(np.float64(t), width, height)
        g = cv2.getRotationMatrix2D((pw / 2, ph / 2), float(angle), float(base * scale))
        g[:, 2] += (cx - pw / 2, cy - ph / 2)
        fg = cv2.warpAffine(photo.astype(np.float32), g, size, flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(mask, g, size, flags=cv2.INTER_LINEAR)[..., None]
        frame = (alpha * fg + (1 - alpha) * back).clip(0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        matrices.append(g)
  finally:
    writer.release()
  return np.array(matrices)
