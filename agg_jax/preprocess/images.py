"""Still images to RGB uint8 arrays, safely (paper Sec. III-A: synthetic faces are still images).

Every mode Pillow opens becomes 8-bit RGB: grayscale and palette images are expanded, alpha is
dropped (colour channels kept as stored), CMYK is converted, 16-bit images keep their 8 most
significant bits. EXIF orientation is applied. Anything that cannot become a usable image raises
BadInput with a one-line reason: empty file, undecodable or truncated data, a header that claims
more than ``max_pixels`` pixels (decompression-bomb guard, checked before any pixel is decoded),
or an image smaller than MIN_SIDE pixels on a side.
"""

import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
MAX_PIXELS = 50_000_000
MIN_SIDE = 16


class BadInput(Exception):
  """An input file that cannot be processed; the message is the manifest's reason."""


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
  """Decodes the image at ``path`` into an (H, W, 3) uint8 RGB array or raises BadInput."""
  path = Path(path)
  if path.stat().st_size == 0:
    raise BadInput("empty file (0 bytes)")
  try:
    with warnings.catch_warnings():  # Sizes are checked below, against max_pixels.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      im = Image.open(path)
  except Image.DecompressionBombError as e:
    pixels = re.search(r"\d+", str(e))
    claimed = f"{int(pixels.group()) / 1e6:.0f} MP" if pixels else "too many pixels"
    raise BadInput(f"image too large: header says {claimed}, limit is {max_pixels / 1e6:.0f} MP "
                   "(decompression-bomb guard)") from None
  except UnidentifiedImageError:
    raise BadInput("not a readable image (unknown or corrupt format)") from None
  except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
    raise BadInput(f"not a readable image (corrupt header: {e})") from None
  with im:
    w, h = im.size
    if w * h > max_pixels:
      raise BadInput(f"image too large: header says {w}x{h} = {w * h / 1e6:.0f} MP, limit is "
                     f"{max_pixels / 1e6:.0f} MP (decompression-bomb guard)")
    try:
      im.load()
      im = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
      raise BadInput(f"cannot decode {im.format or 'image'} {w}x{h}: {e}") from None
    rgb = _to_rgb(im)
  if min(rgb.shape[:2]) < MIN_SIDE:
    raise BadInput(f"image too small: {rgb.shape[1]}x{rgb.shape[0]} px "
                   f"(need at least {MIN_SIDE} px per side)")
  return rgb


def _to_rgb(im: Image.Image) -> np.ndarray:
  """Any Pillow mode to (H, W, 3) uint8 RGB."""
  if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
    a = np.asarray(im)
    a = (a.astype(np.uint32) >> 8) if im.mode.startswith("I;16") or a.max() > 255 else a
    a = np.clip(a, 0, 255).astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=2)
  if im.mode == "F":
    a = np.clip(np.asarray(im), 0, 255).astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=2)
  if im.mode == "P" and "transparency" in im.info:
    im = im.convert("RGBA")
  return np.ascontiguousarray(np.asarray(im.convert("RGB")))
