"""The embedded default dataset: real photographs shipped with scikit-image, and fakes of them.

No download: the real images are crops of the colour photographs inside the installed
scikit-image package; the fakes are made from other crops by the three generators of
generators.py. Each photograph is split by columns: the left 60% feeds training and validation,
the right 40% the test sets, so no test pixel is seen in training. The protocol is the paper's:
train on one generator, test on every generator (section IV).
"""

import os

import cv2
import numpy as np
import skimage.data
import skimage.io

from agg_jax.data import generators
from agg_jax.data.split import FAKE, REAL, Dataset, Split

GENERATORS = ("upsample", "gmm", "splice")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina",
          "immunohistochemistry", "motorcycle_left.png")
TRAIN_COLUMNS = 0.6


def load_photos() -> list[np.ndarray]:
  """The colour photographs bundled with scikit-image (uint8 RGB)."""
  photos = []
  for name in PHOTOS:
    if name.endswith(".png"):
      photos.append(skimage.io.imread(os.path.join(os.path.dirname(skimage.data.__file__), name)))
    else:
      photos.append(getattr(skimage.data, name)())
  return [p[..., :3] for p in photos]


def sample_crops(regions: list[np.ndarray], count: int, size: int,
                 rng: np.random.Generator) -> np.ndarray:
  """Random square crops (side between `size` and 3 * `size`), resized to size x size."""
  crops = np.empty((count, size, size, 3), np.uint8)
  for i in range(count):
    region = regions[rng.integers(len(regions))]
    h, w = region.shape[:2]
    side = int(rng.integers(size, min(h, w, 3 * size) + 1))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = cv2.resize(region[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
    crops[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
  return crops


def _split(real: np.ndarray, fake: np.ndarray, prefix: str) -> Split:
  images = np.concatenate([real, fake])
  labels = np.concatenate([np.full(len(real), REAL), np.full(len(fake), FAKE)]).astype(np.int32)
  ids = np.array([f"{prefix}/real/{i:05d}" for i in range(len(real))] +
                 [f"{prefix}/fake/{i:05d}" for i in range(len(fake))])
  return Split(images, labels, ids)


def build(train_set: str = "upsample", image_size: int = 64, train_per_class: int = 512,
          val_per_class: int = 128, test_per_class: int = 256, seed: int = 0) -> Dataset:
  """Builds the demo dataset deterministically from `seed`.

  Args:
    train_set: the generator whose fakes are used for training and validation.
    image_size: side of the square images.
    *_per_class: real and fake images in each split (test: per test set).
  """
  if train_set not in GENERATORS:
    raise ValueError(f"data.train_set={train_set!r} is not a demo generator; use one of "
                     f"{GENERATORS}")
  if image_size % 16:
    raise ValueError(f"data.image_size={image_size} must be a multiple of 16")
  rng = np.random.default_rng(seed)
  photos = load_photos()
  cut = [int(p.shape[1] * TRAIN_COLUMNS) for p in photos]
  train_regions = [p[:, :c] for p, c in zip(photos, cut)]
  test_regions = [p[:, c:] for p, c in zip(photos, cut)]

  gmm = generators.PatchGMM(sample_crops(train_regions, 256, image_size, rng), rng)
  donors_train = sample_crops(train_regions, 128, image_size, rng)
  donors_test = sample_crops(test_regions, 128, image_size, rng)

  def make_fakes(name: str, sources: np.ndarray, donors: np.ndarray) -> np.ndarray:
    if name == "upsample":
      return generators.upsample_fakes(sources, rng)
    if name == "gmm":
      return gmm(sources, rng)
    return generators.splice_fakes(sources, donors, rng)

  def crops(regions, n):
    return sample_crops(regions, n, image_size, rng)

  train = _split(crops(train_regions, train_per_class),
                 make_fakes(train_set, crops(train_regions, train_per_class), donors_train),
                 f"train/{train_set}")
  validation = _split(crops(train_regions, val_per_class),
                      make_fakes(train_set, crops(train_regions, val_per_class), donors_train),
                      f"validation/{train_set}")
  test_real = crops(test_regions, test_per_class)  # shared by every test set, as in FF++
  test = {name: _split(test_real, make_fakes(name, crops(test_regions, test_per_class),
                                             donors_test), f"test/{name}")
          for name in GENERATORS}
  return Dataset(train_set, train, validation, test)
