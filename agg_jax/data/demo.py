"""The embedded default data source ("demo"): real photographs shipped with scikit-image, and
fakes of them.

No download: the real images are crops of the colour photographs inside the installed
scikit-image package; the fakes are made from other crops by the three generators of
generators.py. Each photograph is split by columns: the left 60% feeds training and validation,
the right 40% the test sets, so no test pixel is seen in training. The protocol is the paper's:
train on one generator, test on every generator (section IV).

Every random number of a dataset is drawn first, in one fixed order from `data.seed`; a split's
pixels are made when its images are first read. So evaluating a run makes the test sets only,
and the same seed gives the same images whichever splits are read.

Config fields (`config.data`): source="demo", train_set (one of GENERATORS), image_size (a
multiple of 16, at least 32, at most the photographs allow), train_per_class, val_per_class,
test_per_class (real and fake images per split; test: per test set), seed.
"""

import functools
import os
from collections.abc import Callable

import cv2
import ml_collections
import numpy as np
import skimage.data
import skimage.io
from absl import logging

from agg_jax.config_validation import require, require_fields
from agg_jax.data import generators
from agg_jax.data.split import FAKE, REAL, Dataset, Split

GENERATORS = ("upsample", "gmm", "splice")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina",
          "immunohistochemistry", "motorcycle_left.png")
TRAIN_COLUMNS = 0.6
FIELDS = ("train_set", "image_size", "train_per_class", "val_per_class", "test_per_class", "seed")
GMM_FIT_IMAGES = 256  # real training-region crops the patch GMM is fitted on
DONORS = 128  # real crops that spliced ellipses are taken from (per side of the column cut)


@functools.cache
def load_photos() -> tuple[np.ndarray, ...]:
  """The colour photographs bundled with scikit-image (uint8 RGB, read-only)."""
  photos = []
  for name in PHOTOS:
    if name.endswith(".png"):
      photo = skimage.io.imread(os.path.join(os.path.dirname(skimage.data.__file__), name))
    else:
      photo = getattr(skimage.data, name)()
    photo = np.ascontiguousarray(photo[..., :3])
    photo.setflags(write=False)
    photos.append(photo)
  return tuple(photos)


def regions(size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """(training, test) regions of the photographs: left 60% and right 40% of their columns, each
  kept only where a size x size crop fits."""
  train, test = [], []
  for photo in load_photos():
    cut = int(photo.shape[1] * TRAIN_COLUMNS)
    train.append(photo[:, :cut])
    test.append(photo[:, cut:])
  fits = lambda region: min(region.shape[:2]) >= size
  return [r for r in train if fits(r)], [r for r in test if fits(r)]


def largest_size() -> int:
  """The largest image size (a multiple of 16) with training and test regions to crop from."""
  train, test = regions(0)
  side = min(max(min(r.shape[:2]) for r in train), max(min(r.shape[:2]) for r in test))
  return side - side % 16


def check(data: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first `config.data` field the demo cannot work with."""
  require_fields(data, "data", FIELDS, "the demo source")
  require(data.train_set in GENERATORS, "data.train_set", data.train_set,
          f"the demo's training sets are {GENERATORS}")
  size, largest = data.image_size, largest_size()
  require(isinstance(size, int) and size >= 32 and size % 16 == 0, "data.image_size", size,
          "must be a multiple of 16, at least 32")
  require(size <= largest, "data.image_size", size,
          f"the demo's photographs allow at most {largest} px")
  for key in ("train_per_class", "val_per_class", "test_per_class"):
    require(isinstance(data[key], int) and data[key] > 0, f"data.{key}", data[key],
            "must be a whole number > 0")
  require(isinstance(data.seed, int), "data.seed", data.seed, "must be a whole number")


def image_shape(data: ml_collections.ConfigDict) -> tuple[int, int, int]:
  return (data.image_size, data.image_size, 3)


def load(data: ml_collections.ConfigDict) -> Dataset:
  """The dataset `config.data` describes (checked first)."""
  check(data)
  return build(data.train_set, data.image_size, data.train_per_class, data.val_per_class,
               data.test_per_class, data.seed)


def draw_crops(regions_: list[np.ndarray], count: int, size: int,
               rng: np.random.Generator) -> np.ndarray:
  """Random square crops, as (region, side, y, x, flip) rows: side between `size` and 3 * `size`,
  half of them mirrored."""
  plan = np.empty((count, 5), np.int64)
  for i in range(count):
    region = int(rng.integers(len(regions_)))
    h, w = regions_[region].shape[:2]
    side = int(rng.integers(size, min(h, w, 3 * size) + 1))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    plan[i] = region, side, y, x, rng.random() < 0.5
  return plan


def render_crops(regions_: list[np.ndarray], plan: np.ndarray, size: int) -> np.ndarray:
  """The crops of a `draw_crops` plan, resized to size x size (uint8 RGB)."""
  crops = np.empty((len(plan), size, size, 3), np.uint8)
  for i, (region, side, y, x, flip) in enumerate(plan):
    crop = cv2.resize(regions_[region][y:y + side, x:x + side], (size, size),
                      interpolation=cv2.INTER_AREA)
    crops[i] = crop[:, ::-1] if flip else crop
  return crops


def sample_crops(regions_: list[np.ndarray], count: int, size: int,
                 rng: np.random.Generator) -> np.ndarray:
  """Random crops (`draw_crops`), made at once."""
  return render_crops(regions_, draw_crops(regions_, count, size, rng), size)


class RenderedImages:
  """A split's images, made by `render` when first read and then held in memory."""

  def __init__(self, render: Callable[[], np.ndarray], count: int, size: int, name: str):
    self._render = render
    self._images = None
    self.count = count
    self.shape = (size, size, 3)
    self.name = name

  @property
  def made(self) -> bool:
    """Whether the images exist yet (they are made on the first read)."""
    return self._images is not None

  def __len__(self) -> int:
    return self.count

  def read(self, indices: np.ndarray) -> np.ndarray:
    if self._images is None:
      self._images = self._render()
      self._render = None
      logging.info("demo: made the %d images of %s", self.count, self.name)
    return self._images[np.asarray(indices)]


def build(train_set: str = "upsample", image_size: int = 64, train_per_class: int = 512,
          val_per_class: int = 128, test_per_class: int = 256, seed: int = 0) -> Dataset:
  """The demo dataset of `seed`; a split's pixels are made when its images are first read.

  Args:
    train_set: the generator whose fakes are used for training and validation.
    image_size: side of the square images (`check` says which sizes work).
    *_per_class: real and fake images in each split (test: per test set).
  """
  rng = np.random.default_rng(seed)
  size = image_size
  train_regions, test_regions = regions(size)

  def crops(regions_, count) -> Callable[[], np.ndarray]:
    plan = draw_crops(regions_, count, size, rng)
    return functools.cache(lambda: render_crops(regions_, plan, size))

  gmm_fit_crops = crops(train_regions, GMM_FIT_IMAGES)
  gmm = generators.PatchGMM(GMM_FIT_IMAGES, size, rng)
  fitted_gmm = functools.cache(lambda: gmm.fit(gmm_fit_crops()))
  donors = {"train": crops(train_regions, DONORS), "test": crops(test_regions, DONORS)}

  def fakes(method: str, sources: Callable, side: str, count: int) -> Callable[[], np.ndarray]:
    """The fakes `method` makes of `sources`, its random numbers drawn now."""
    if method == "upsample":
      gains = generators.upsample_draw(count, rng)
      return lambda: generators.upsample_fakes(sources(), gains)
    if method == "gmm":
      noise = gmm.draw(count, size, rng)
      return lambda: fitted_gmm()(sources(), noise())
    if method == "splice":
      ellipses = generators.splice_draw(count, DONORS, rng)
      return lambda: generators.splice_fakes(sources(), donors[side](), ellipses)
    raise ValueError(f"{method!r} is not a demo generator; use one of {GENERATORS}")

  def split(real: Callable, fake: Callable, method: str, count: int, prefix: str) -> Split:
    images = RenderedImages(lambda: np.concatenate([real(), fake()]), 2 * count, size, prefix)
    labels = np.array([REAL] * count + [FAKE] * count, np.int32)
    ids = np.array([f"{prefix}/real/{i:05d}" for i in range(count)] +
                   [f"{prefix}/fake/{i:05d}" for i in range(count)])
    return Split(images, labels, ids, methods=np.array(["real"] * count + [method] * count))

  def own_split(count: int, prefix: str) -> Split:
    real = crops(train_regions, count)
    sources = crops(train_regions, count)
    return split(real, fakes(train_set, sources, "train", count), train_set, count, prefix)

  train = own_split(train_per_class, f"train/{train_set}")
  validation = own_split(val_per_class, f"validation/{train_set}")
  test_real = crops(test_regions, test_per_class)  # shared by every test set, as in FF++
  test = {}
  for name in GENERATORS:
    sources = crops(test_regions, test_per_class)
    test[name] = split(test_real, fakes(name, sources, "test", test_per_class), name,
                       test_per_class, f"test/{name}")
  return Dataset(train_set, train, validation, test)
