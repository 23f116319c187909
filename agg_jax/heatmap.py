"""A heatmap drawn over an image: the one colour rule of the CAM figures (analysis/cam.py) and
of `agg_jax.predict`'s overlays. It needs numpy and matplotlib's colour maps only, no training
code.
"""

import matplotlib
import numpy as np


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  """`heat` (H, W) in [0, 1] in matplotlib's "jet" colours blended over `image` (H, W, 3) uint8:
  (1 - alpha) * image + alpha * colour, as uint8."""
  image = np.asarray(image)
  heat = np.asarray(heat, np.float32)
  if image.shape[:2] != heat.shape or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"image {image.shape} and heat map {heat.shape} differ: want (H, W, 3) and "
                     "(H, W)")
  colours = matplotlib.colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
  blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
  return np.clip(np.rint(blend), 0, 255).astype(np.uint8)
