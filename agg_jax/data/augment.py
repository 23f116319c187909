"""Training augmentations of Wang et al. (CVPR 2020): random blur, JPEG and horizontal flips.

Wang et al., "CNN-generated images are surprisingly easy to spot... for now" (reference code:
PeterWang512/CNNDetection, data/datasets.py), the rows "CNN (p=0.1)" and "CNN (p=0.5)" of
Table I: each training image is, independently, Gaussian-blurred with probability `blur_prob`
(sigma ~ Uniform[0, 3]), then JPEG re-compressed with probability `jpeg_prob` (quality ~
Uniform{30, ..., 100}), then mirrored left-right with probability 0.5, in their order.

Both operations use OpenCV, where the reference uses scipy for blur and cv2 or PIL for JPEG:

  blur  `cv2.GaussianBlur` on float32 with scipy's kernel (`gaussian_filter`'s truncate=4,
        radius int(4 sigma + 0.5)) and `BORDER_REFLECT` (scipy's default 'reflect'), rounded to
        uint8: within 0.5 grey levels of scipy's float result. (On uint8, OpenCV would use a
        3-sigma kernel in fixed point, up to 1.3 levels off.) The reference filters in place
        into uint8, so scipy truncates after each of its two 1-D passes and darkens blurred
        images by about 1 grey level on average; rounding here does not copy that bias.
  JPEG  `cv2.imencode` / `cv2.imdecode` (libjpeg-turbo, 4:2:0 chroma), which here gives the
        same pixels as PIL's save and load at the same quality, so the reference's random
        choice between the two libraries is moot.

Every image consumes `DRAWS_PER_IMAGE` uniforms of the generator, whatever the settings, so the
result is a pure function of (images, generator state), and `sample` for a global batch, sliced
with `Draws.take`, augments each process's rows as one process would.
"""

import dataclasses
import numbers
from typing import NamedTuple

import cv2
import ml_collections
import numpy as np

from agg_jax.config_validation import require

CONFIG_FIELDS = ("flip", "blur_prob", "jpeg_prob")
DRAWS_PER_IMAGE = 5  # blur?, sigma, jpeg?, quality, flip?: the columns of one `rng.random` call
SCIPY_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default kernel half-width, in sigmas


class Draws(NamedTuple):
  """Per-image decisions and parameters, one entry per image."""
  blur: np.ndarray  # bool
  sigma: np.ndarray  # float64, used where `blur`
  jpeg: np.ndarray  # bool
  quality: np.ndarray  # int64, used where `jpeg`
  flip: np.ndarray  # bool

  def take(self, rows) -> "Draws":
    """The draws of `rows` (e.g. one process's rows of a global batch)."""
    return Draws(*(field[rows] for field in self))


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """`image` (H, W, C) uint8 blurred per channel as scipy's `gaussian_filter` does; sigma 0 is
  the identity."""
  radius = int(SCIPY_TRUNCATE * sigma + 0.5)
  if radius == 0:
    return image
  size = 2 * radius + 1
  blurred = cv2.GaussianBlur(np.ascontiguousarray(image, np.float32), (size, size),
                             sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
  return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  """`image` (H, W, 3) uint8 RGB, JPEG-encoded at `quality` and decoded."""
  ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                             [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
  if not ok:
    raise RuntimeError(f"OpenCV could not JPEG-encode an image of shape {image.shape}")
  return cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]


def _check_range(low, high, minimum, maximum, name: str) -> None:
  if not minimum <= low <= high <= maximum:
    raise ValueError(f"{name}={(low, high)}: must satisfy {minimum} <= low <= high <= {maximum}")


@dataclasses.dataclass(frozen=True)
class Augment:
  """Wang et al.'s blur + JPEG augmentation and horizontal flips of uint8 (N, H, W, 3) batches.

  `Augment(blur_prob=p, jpeg_prob=p)` is their "Blur+JPEG (p)"; the default flips only.
  """
  flip: bool = True
  blur_prob: float = 0.0
  blur_sigma: tuple[float, float] = (0.0, 3.0)
  jpeg_prob: float = 0.0
  jpeg_quality: tuple[int, int] = (30, 100)

  def __post_init__(self):
    _check_range(self.blur_prob, self.blur_prob, 0, 1, "blur_prob")
    _check_range(self.jpeg_prob, self.jpeg_prob, 0, 1, "jpeg_prob")
    _check_range(*self.blur_sigma, 0, np.inf, "blur_sigma")
    _check_range(*self.jpeg_quality, 0, 100, "jpeg_quality")

  @property
  def active(self) -> bool:
    """Whether the augmentation can change an image at all."""
    return self.flip or self.blur_prob > 0 or self.jpeg_prob > 0

  def sample(self, n: int, rng: np.random.Generator) -> Draws:
    """The draws for `n` images: one (n, DRAWS_PER_IMAGE) block of uniforms, row i for image i."""
    u = rng.random((n, DRAWS_PER_IMAGE))
    sigma_low, sigma_high = self.blur_sigma
    quality_low, quality_high = self.jpeg_quality
    quality_count = quality_high - quality_low + 1
    return Draws(blur=u[:, 0] < self.blur_prob,
                 sigma=sigma_low + u[:, 1] * (sigma_high - sigma_low),
                 jpeg=u[:, 2] < self.jpeg_prob,
                 quality=quality_low + np.minimum(np.floor(u[:, 3] * quality_count).astype(
                     np.int64), quality_count - 1),
                 flip=self.flip & (u[:, 4] < 0.5))

  def apply(self, images: np.ndarray, draws: Draws) -> np.ndarray:
    """`images` blurred, then JPEG-compressed, then flipped where `draws` say so."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} "
                       f"{images.shape}")
    if len(draws.flip) != len(images):
      raise ValueError(f"{len(draws.flip)} draws for {len(images)} images")
    out = np.empty_like(images)
    for i, image in enumerate(images):
      if draws.blur[i]:
        image = gaussian_blur(image, draws.sigma[i])
      if draws.jpeg[i]:
        image = jpeg(image, draws.quality[i])
      out[i] = image[:, ::-1] if draws.flip[i] else image
    return out

  def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`images` augmented with draws from `rng`: the same generator state, the same output."""
    return self.apply(images, self.sample(len(images), rng))


def _is_probability(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value <= 1


def check_config(data: ml_collections.ConfigDict) -> None:
  """Checks `config.data.augment` (optional; absent fields take `Augment`'s defaults)."""
  augment = data.get("augment")
  if augment is None:
    return
  require(isinstance(augment, (dict, ml_collections.ConfigDict)), "data.augment", augment,
          f"must be a section with fields {', '.join(CONFIG_FIELDS)}")
  for field in augment.keys():
    require(field in CONFIG_FIELDS, f"data.augment.{field}", augment[field],
            f"unknown field; data.augment reads {', '.join(CONFIG_FIELDS)}")
  flip = augment.get("flip", True)
  require(isinstance(flip, (bool, np.bool_)), "data.augment.flip", flip, "must be True or False")
  for field in ("blur_prob", "jpeg_prob"):
    value = augment.get(field, 0.0)
    require(_is_probability(value), f"data.augment.{field}", value,
            "must be a probability in [0, 1]")


def from_config(data: ml_collections.ConfigDict) -> Augment:
  """The `Augment` that `config.data.augment.{flip, blur_prob, jpeg_prob}` describe."""
  check_config(data)
  augment = data.get("augment")
  augment = {} if augment is None else augment
  return Augment(flip=bool(augment.get("flip", True)),
                 blur_prob=float(augment.get("blur_prob", 0.0)),
                 jpeg_prob=float(augment.get("jpeg_prob", 0.0)))
