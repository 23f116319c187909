"""Three synthetic forgery generators for the embedded demo dataset.

Each turns real uint8 images (N, H, W, 3) into fakes of the same shape, leaving a fingerprint of
its own kind, like the generator families of the paper's section II-D:

  upsample  an up-sampling decoder: 2x down-sampling, then a stride-2 transposed convolution
            whose four kernel phases have unequal gains, the checkerboard of GAN decoders.
  gmm       a patch Gaussian mixture (after Richardson & Weiss, the paper's GMM [18]): each 4x4
            patch is replaced by a sample of its most likely component, restricted to the
            component's leading principal directions, with the residual variance as noise.
  splice    a face-swap-like blend: an ellipse from another real image, colour-matched, pasted
            with a feathered alpha mask.

Every generator draws all its random numbers first (`*_draw`, `PatchGMM.draw`), then makes the
fakes from the images and those numbers alone. The demo draws a whole dataset's numbers in one
fixed order and makes only the images that are read, so its data depends on the seed alone.
"""

import copy
import warnings
from collections.abc import Callable

import numpy as np
from scipy import ndimage
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits


def replayable_normal(rng: np.random.Generator, shape: tuple[int, ...],
                      chunk: int = 1 << 20) -> Callable[[], np.ndarray]:
  """Draws standard normals of `shape` from `rng` now without keeping them (in chunks, so memory
  stays small); the returned function makes exactly those numbers again."""
  state = copy.deepcopy(rng.bit_generator.state)
  total = int(np.prod(shape))
  for start in range(0, total, chunk):
    rng.normal(size=min(chunk, total - start))

  def replay() -> np.ndarray:
    again = np.random.Generator(type(rng.bit_generator)())
    again.bit_generator.state = state
    return again.normal(size=shape)

  return replay


def _to_uint8(x: np.ndarray) -> np.ndarray:
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def upsample_draw(count: int, rng: np.random.Generator) -> np.ndarray:
  """The per-image gains of the four kernel phases, (count, 2, 2, 1)."""
  return 1.0 + rng.uniform(-0.05, 0.05, size=(count, 2, 2, 1)).astype(np.float32)


def upsample_fakes(images: np.ndarray, gains: np.ndarray) -> np.ndarray:
  """Down-sample 2x, then up-sample with an uneven-phase transposed convolution."""
  x = images.astype(np.float32)
  n, h, w, c = x.shape
  small = x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
  up = np.zeros_like(x)
  up[:, ::2, ::2] = small
  up[:, 1::2, ::2] = small
  up[:, ::2, 1::2] = small
  up[:, 1::2, 1::2] = small
  # Bilinear-ish smoothing of the nearest-neighbour result, then per-phase gains: the
  # transposed-convolution checkerboard.
  up = ndimage.uniform_filter(up, size=(1, 2, 2, 1), mode="nearest")
  up *= np.tile(gains, (1, h // 2, w // 2, 1))
  return _to_uint8(up)


class PatchGMM:
  """A Gaussian mixture over small (4x4) RGB patches, fitted on real images.

  Made in two steps so that its random numbers can be drawn before any pixel exists: the
  constructor draws which patches of `num_images` size x size images the fit uses, `fit` fits.
  """

  def __init__(self, num_images: int, size: int, rng: np.random.Generator, patch: int = 4,
               components: int = 8, rank: int = 4, max_patches: int = 4000):
    self.patch = patch
    self.rank = rank
    num_patches = num_images * (size // patch) ** 2
    self.take = rng.choice(num_patches, size=min(max_patches, num_patches), replace=False)
    self.gmm = GaussianMixture(components, covariance_type="full", reg_covar=1.0,
                               random_state=int(rng.integers(1 << 31)), max_iter=30)
    self.basis = self.residual_std = None

  def fit(self, real_images: np.ndarray) -> "PatchGMM":
    """Fits the mixture on the drawn patches of `real_images` (num_images of them)."""
    # One BLAS thread: on these small matrices more threads only contend (20x slower on a
    # busy 2-core machine). A generator needs a plausible mixture, not a converged one.
    with threadpool_limits(1), warnings.catch_warnings():
      warnings.simplefilter("ignore", ConvergenceWarning)
      self.gmm.fit(self._patches(real_images)[self.take])
    eigvals, eigvecs = np.linalg.eigh(self.gmm.covariances_)
    self.basis = eigvecs[:, :, ::-1][:, :, :self.rank]  # (K, D, rank), leading directions
    self.residual_std = np.sqrt(np.maximum(eigvals[:, :-self.rank].mean(axis=1), 0.0))  # (K,)
    return self

  def draw(self, count: int, size: int, rng: np.random.Generator) -> Callable[[], np.ndarray]:
    """The sampling noise of `count` size x size fakes, one normal vector per patch, as a
    replayable draw (`replayable_normal`): it can be large."""
    shape = (count * (size // self.patch) ** 2, self.patch * self.patch * 3)
    return replayable_normal(rng, shape)

  def _patches(self, images: np.ndarray) -> np.ndarray:
    n, h, w, c = images.shape
    p = self.patch
    x = images[:, :h - h % p, :w - w % p].astype(np.float32)
    x = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, p * p * c)

  def __call__(self, images: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """The fakes of `images` with the `draw`n noise; needs `fit` first."""
    if self.basis is None:
      raise RuntimeError("PatchGMM: fit it before making fakes")
    n, h, w, c = images.shape
    p = self.patch
    patches = self._patches(images)
    component = self.gmm.predict(patches)
    mean = self.gmm.means_[component]
    basis = self.basis[component]
    coeffs = np.einsum("nd,ndr->nr", patches - mean, basis)
    samples = mean + np.einsum("nr,ndr->nd", coeffs, basis)
    samples += noise * self.residual_std[component, None]
    out = samples.reshape(n, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    fakes = images.copy()
    fakes[:, :h - h % p, :w - w % p] = _to_uint8(out.reshape(n, h - h % p, w - w % p, c))
    return fakes


def splice_draw(count: int, num_donors: int, rng: np.random.Generator) -> list[tuple]:
  """Per fake: (donor index, centre y, x, radius y, x as fractions of the image side)."""
  return [(int(rng.integers(num_donors)), rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65),
           rng.uniform(0.2, 0.35), rng.uniform(0.2, 0.35)) for _ in range(count)]


def splice_fakes(images: np.ndarray, donors: np.ndarray, ellipses: list[tuple]) -> np.ndarray:
  """Pastes a colour-matched, feathered ellipse of a donor image into each image."""
  n, h, w, _ = images.shape
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  fakes = np.empty_like(images)
  for i in range(n):
    target = images[i].astype(np.float32)
    donor_index, fy, fx, fry, frx = ellipses[i]
    donor = donors[donor_index].astype(np.float32)
    cy, cx = fy * h, fx * w
    ry, rx = fry * h, frx * w
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    alpha = ndimage.gaussian_filter(inside.astype(np.float32), sigma=1.5)[..., None]
    # Colour transfer: donor statistics matched to the target's inside the ellipse.
    d_mean, d_std = donor[inside].mean(0), donor[inside].std(0) + 1e-3
    t_mean, t_std = target[inside].mean(0), target[inside].std(0) + 1e-3
    donor = (donor - d_mean) / d_std * t_std + t_mean
    donor = ndimage.gaussian_filter(donor, sigma=(0.7, 0.7, 0))
    fakes[i] = _to_uint8(alpha * donor + (1 - alpha) * target)
  return fakes
