"""Cues that are not the forgery, and how well each alone separates real from fake.

A detector can learn where its faces come from instead of how they were forged: how much of the
aligned face is black padding (tight real crops leave it, GAN faces do not), how large the
source picture was, how strongly it was JPEG-compressed. Before any claim about a detector,
measure what each cue alone reaches on every test set: its AP when it is used as the score, in
the direction that separates the training set (so, like a detector, it learns on training data
only and is judged on the test sets). A cue is uninformative when its AP is near the fraction of
fakes (ties everywhere: exactly that).

Cues of a face (`face_cues`):
  padding        fraction of the face as the model reads it (the data's crop) that is black in
                 every channel: the aligner's fill outside the source picture
  megapixels     the source picture's size (from its header, under the dataset's manual folder)
  jpeg_quality   the source's JPEG quality, estimated from its luminance quantisation table
                 (IJG scaling; 0 for pictures that are not JPEG)
"""

import os
from collections.abc import Mapping

import numpy as np
from PIL import Image
from sklearn.metrics import average_precision_score

from agg_jax import face_input
from agg_jax.datasets import faces

CUES = ("padding", "megapixels", "jpeg_quality")
# The IJG standard luminance quantisation table (JPEG standard, Annex K), natural order.
_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69,
    56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81,
    104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])


def ijg_table(quality: int) -> np.ndarray:
  """The luminance table libjpeg writes at `quality` (1-100)."""
  scale = 5000 / quality if quality < 50 else 200 - 2 * quality
  return np.clip((_LUMINANCE * scale + 50) // 100, 1, 255)


def jpeg_quality(image: Image.Image) -> int:
  """The IJG quality whose luminance table is closest to the image's (0: not a JPEG)."""
  tables = getattr(image, "quantization", None)
  if not tables:
    return 0
  luminance = np.sort(np.asarray(tables[min(tables)], np.float64))  # order-free comparison
  errors = [np.abs(np.sort(ijg_table(q)) - luminance).sum() for q in range(1, 101)]
  return int(np.argmin(errors)) + 1


def source_cues(path: str) -> tuple[float, int]:
  """(megapixels, JPEG quality) of a source picture, from its header alone."""
  with Image.open(path) as image:
    return image.width * image.height / 1e6, jpeg_quality(image)


def face_cues(split, manual_dir: str | None = None, chunk: int = 256) -> dict[str, np.ndarray]:
  """Each cue of every face of `split` (a "tfds" source split), in order. The source cues need
  the dataset's manual folder (the build's --manual_dir); without it only padding is given."""
  images = split.images
  padding, sources = [], []
  for start in range(0, len(split), chunk):
    for record in images.records(np.arange(start, min(start + chunk, len(split)))):
      face = face_input.central_crop(faces.decode_png(record["image"]), images.crop)
      padding.append(face_input.border_fraction(face))
      path = record["path"].decode() if isinstance(record["path"], bytes) else record["path"]
      if manual_dir:
        sources.append(source_cues(os.path.join(manual_dir, path)))
  cues = {"padding": np.asarray(padding)}
  if manual_dir:
    cues["megapixels"] = np.asarray([s[0] for s in sources])
    cues["jpeg_quality"] = np.asarray([s[1] for s in sources], np.float64)
  return cues


def direction(labels: np.ndarray, values: np.ndarray) -> int:
  """+1 when larger values mean fake on these labelled faces, else -1 (by AP)."""
  return 1 if average_precision_score(labels, values) >= average_precision_score(
      labels, -values) else -1


def cue_average_precision(train: tuple[np.ndarray, np.ndarray],
                          tests: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
  """AP (%) on each test set of one cue used as the score, in the direction that separates the
  training faces. `train` and each test are (labels, values)."""
  sign = direction(*train)
  return {name: 100 * float(average_precision_score(labels, sign * values))
          for name, (labels, values) in tests.items()}
