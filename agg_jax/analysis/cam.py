"""Class activation maps of the real/fake classifiers: Score-CAM and Grad-CAM on a backbone block.

The paper's Figures 5-6 show Score-CAM (Wang et al., CVPR-W 2020) on the blocks the aggregation
head found important. Both methods read a block's output A (B, h, w, C), sown by every backbone
into `intermediates`; Grad-CAM also needs d score / dA, which the backbone gives when its
`perturb_endpoints` field is on (`layers.emit_endpoint`). Maps are (B, H, W) float32 in [0, 1]
at the input's size; `overlay` and `cam_figure` draw them in the layout of Figures 5-6.

The classifiers output one logit per image: the probability of "fake" (label 1) is
sigmoid(logit) and that of "real" (label 0) is 1 - sigmoid(logit); `target` picks the class
explained.
"""

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from agg_jax.analysis import plotting
from agg_jax.heatmap import overlay

WEIGHTINGS = ("softmax", "confidence")
MAPS = ("activation", "mask")


def _check_target(target: int) -> float:
  """The sign that turns the fake-score logit into the explained class's score."""
  if target not in (0, 1):
    raise ValueError(f"target must be 1 (fake) or 0 (real), got {target!r}")
  return 1.0 if target == 1 else -1.0


def _model_variables(variables: Mapping[str, Any]) -> dict[str, Any]:
  """The variables a forward pass reads (none of the collections an analysis adds)."""
  return {k: v for k, v in variables.items() if k not in ("intermediates", "perturbations")}


def _pick_block(intermediates: Mapping[str, Any], layer: str) -> jax.Array:
  blocks = intermediates["intermediates"]["backbone"]
  if layer not in blocks:
    raise KeyError(f"no block {layer!r} in the model's intermediates; it has {sorted(blocks)}")
  return blocks[layer][0]


def _resize(maps: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize of (N, h, w) maps; for upsampling this is torch's
  `F.interpolate(mode="bilinear", align_corners=False)` (half-pixel centres, edges clamped)."""
  return jax.image.resize(maps, (maps.shape[0], height, width), "bilinear")


def _normalize_per_map(maps: jax.Array) -> jax.Array:
  """Min-max normalisation of each (H, W) map of (N, H, W) to [0, 1]; a constant map -> 0."""
  low = maps.min(axis=(1, 2), keepdims=True)
  high = maps.max(axis=(1, 2), keepdims=True)
  span = high - low
  return jnp.where(span > 0, (maps - low) / jnp.where(span > 0, span, 1.0), 0.0)


class _Static:
  """A model as a static `jax.jit` argument, so each computation compiles once per model, layer
  and shape across calls: Flax modules with a dict field (the aggregation head's windows) are
  unhashable, so it is equal and hashed by its repr, which shows every field."""

  def __init__(self, module: nn.Module):
    self.module = module
    self._key = repr(module)

  def __hash__(self):
    return hash(self._key)

  def __eq__(self, other):
    return isinstance(other, _Static) and self._key == other._key


@functools.partial(jax.jit, static_argnames=("model", "layer"))
def _activations(model, variables, images, layer):
  _, state = model.module.apply(variables, images, train=False, mutable=["intermediates"])
  return _pick_block(state, layer)


def block_activations(model: nn.Module, variables: Mapping[str, Any], images,
                      layer: str) -> jax.Array:
  """The output (B, h, w, C) of the backbone block `layer` (e.g. "block05") for `images`."""
  return _activations(_Static(model), _model_variables(variables), jnp.asarray(images), layer)


def score_cam(model: nn.Module, variables: Mapping[str, Any], images, layer: str, *,
              chunk: int = 32, target: int = 1, weighting: str = "softmax",
              maps: str = "activation",
              progress: Callable[[int, int], Any] | None = None) -> np.ndarray:
  """Score-CAM saliency maps (B, H, W) float32 in [0, 1] of `images` (B, H, W, 3) at `layer`.

  As the paper and the reference code (haofanwang/Score-CAM, cam/scorecam.py) define it, per
  image X and channel k of the block output A: H_k = A_k upsampled bilinearly to the input size
  and min-max normalised to [0, 1] (a constant channel, judged on A_k itself since its
  upsampling may wobble by a rounding error, is skipped: weight 0); f(X * H_k) is the
  probability of the explained class (`target` 1: fake, 0: real) for the masked image. The
  weights w_k are
    "softmax" (the paper): softmax over the channels of C_k = f(X * H_k) - f(X_b), X_b the black
      image; the softmax cancels the baseline term, so f(X_b) is never computed;
    "confidence" (the reference code): w_k = f(X * H_k), unnormalised.
  The map is ReLU(sum_k w_k A_k upsampled) (the activations themselves, not normalised, as the
  reference: `maps="activation"`), min-max normalised per image (all zeros where constant).
  That sum presumes post-ReLU features. EfficientNet's block outputs are linear bottlenecks
  (signed, mean below zero), where it is negative almost everywhere and the ReLU leaves an empty
  map; `maps="mask"` sums the [0, 1] masks H_k that the scores were measured with instead,
  sum_k w_k H_k, which keeps the method's weighting and is never empty.

  The B * C masked images go through one jitted forward pass per `chunk` images (the last chunk
  padded, so it compiles once); `progress(done, total)` is called after each chunk with the
  masked images done so far and their total B * C.
  """
  sign = _check_target(target)
  if weighting not in WEIGHTINGS:
    raise ValueError(f"unknown weighting {weighting!r}: use one of {WEIGHTINGS}")
  if maps not in MAPS:
    raise ValueError(f"unknown maps {maps!r}: use one of {MAPS}")
  if chunk < 1:
    raise ValueError(f"chunk must be >= 1, got {chunk}")
  # On the device once (not again with every chunk, where they were host arrays).
  variables = jax.tree.map(jnp.asarray, _model_variables(variables))
  images = jnp.asarray(images).astype(jnp.float32)
  batch, height, width, _ = images.shape
  acts = block_activations(model, variables, images, layer).astype(jnp.float32)
  channels = acts.shape[-1]
  # A channel is constant (skipped) where its own max equals its min.
  valid = acts.max(axis=(1, 2)) > acts.min(axis=(1, 2))  # (B, C)

  static = _Static(model)
  total = batch * channels
  chunk = min(chunk, total)
  image_index = np.repeat(np.arange(batch), channels)
  channel_index = np.tile(np.arange(channels), batch)
  padded = math.ceil(total / chunk) * chunk
  image_index = np.pad(image_index, (0, padded - total))
  channel_index = np.pad(channel_index, (0, padded - total))
  scores = []
  for start in range(0, total, chunk):
    part = slice(start, start + chunk)
    scores.append(_masked_scores(static, sign, variables, images, acts, image_index[part],
                                 channel_index[part]))
    if progress is not None:
      scores[-1].block_until_ready()  # report work done, not work queued
      progress(min(start + chunk, total), total)
  scores = jnp.concatenate(scores)[:total].reshape(batch, channels)
  return np.asarray(_combine(acts, scores, valid, weighting, maps, height, width))


@functools.partial(jax.jit, static_argnames=("model",))
def _masked_scores(model, sign, variables, images, acts, image_index, channel_index):
  """f(X * H_k) for the (image, channel) pairs of one chunk."""
  maps = acts[image_index, :, :, channel_index]  # (chunk, h, w)
  masks = _normalize_per_map(_resize(maps, images.shape[1], images.shape[2]))
  logits, _ = model.module.apply(variables, images[image_index] * masks[..., None], train=False)
  return jax.nn.sigmoid(sign * logits.astype(jnp.float32))


@functools.partial(jax.jit, static_argnames=("weighting", "maps", "height", "width"))
def _combine(acts, scores, valid, weighting, maps, height, width):
  """Score-CAM's weighted sum of the channels, ReLU, upsampled, normalised per image."""

  if weighting == "softmax":
    weights = jax.nn.softmax(jnp.where(valid, scores, -jnp.inf), axis=-1)
    weights = jnp.where(valid.any(axis=-1, keepdims=True), weights, 0.0)
  else:
    weights = jnp.where(valid, scores, 0.0)
  if maps == "mask":  # the masks H_k themselves, one image at a time (memory: C x H x W)
    def one_image(args):
      image_acts, image_weights = args
      masks = _normalize_per_map(_resize(jnp.moveaxis(image_acts, -1, 0), height, width))
      return jnp.einsum("chw,c->hw", masks, image_weights)
    cam = jax.nn.relu(jax.lax.map(one_image, (acts, weights)))
  else:
    # Upsampling is linear: sum_k w_k up(A_k) = up(sum_k w_k A_k), summed before upsampling.
    cam = jax.nn.relu(_resize(jnp.einsum("bhwc,bc->bhw", acts, weights), height, width))
  return _normalize_per_map(cam).astype(jnp.float32)


def block_gradients(model: nn.Module, variables: Mapping[str, Any], images, layer: str, *,
                    target: int = 1) -> tuple[jax.Array, jax.Array]:
  """The block output A (B, h, w, C) and d score / dA, score the logit (target 1, fake) or
  minus the logit (target 0, real); through the backbone's `perturb_endpoints`."""
  sign = _check_target(target)
  return _gradients(_Static(model), sign, _model_variables(variables), jnp.asarray(images), layer)


@functools.partial(jax.jit, static_argnames=("model", "layer"))
def _gradients(model, sign, variables, images, layer):
  model = model.module
  perturbed = model.clone(backbone=model.backbone.clone(perturb_endpoints=True))

  def score(perturbations):
    (logits, _), state = perturbed.apply({**variables, "perturbations": perturbations}, images,
                                         train=False, mutable=["intermediates"])
    # Images are independent (no batch statistics at inference): the sum's gradient by one
    # image's block output is that image's own.
    return sign * logits.astype(jnp.float32).sum(), _pick_block(state, layer)

  shapes = jax.eval_shape(perturbed.init, jax.random.key(0), images)["perturbations"]
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  grads, acts = jax.grad(score, has_aux=True)(zeros)
  return acts, grads["backbone"][layer]


def grad_cam(model: nn.Module, variables: Mapping[str, Any], images, layer: str, *,
             target: int = 1) -> np.ndarray:
  """Grad-CAM maps (B, H, W) float32 in [0, 1] (Selvaraju et al. 2017) at `layer`: channel
  weights w_k = spatial mean of d score / dA_k (score: the logit for target 1, fake; minus the
  logit for target 0, real), map ReLU(sum_k w_k A_k) upsampled bilinearly to the input size and
  min-max normalised per image (all zeros where constant)."""
  acts, grads = block_gradients(model, variables, images, layer, target=target)
  height, width = np.shape(images)[1:3]
  return np.asarray(_grad_cam_map(acts, grads, int(height), int(width)))


@functools.partial(jax.jit, static_argnames=("height", "width"))
def _grad_cam_map(acts, grads, height, width):
  weights = grads.astype(jnp.float32).mean(axis=(1, 2))  # (B, C)
  cam = jax.nn.relu(jnp.einsum("bhwc,bc->bhw", acts.astype(jnp.float32), weights))
  return _normalize_per_map(_resize(cam, height, width)).astype(jnp.float32)


def grad_cam_maps(model: nn.Module, variables: Mapping[str, Any], images: jax.Array,
                  layers: Sequence[str], target: int = 1) -> jax.Array:
  """Grad-CAM maps (B, len(layers), H, W) of several blocks from one backward pass, as a plain
  traceable function (for `jax.jit` and `jax.export`; `grad_cam` computes the same per layer).
  """
  sign = _check_target(target)
  perturbed = model.clone(backbone=model.backbone.clone(perturb_endpoints=True))
  variables = _model_variables(variables)

  def score(perturbations):
    (logits, _), state = perturbed.apply({**variables, "perturbations": perturbations}, images,
                                         train=False, mutable=["intermediates"])
    return sign * logits.astype(jnp.float32).sum(), [_pick_block(state, l) for l in layers]

  shapes = jax.eval_shape(perturbed.init, jax.random.key(0), images)["perturbations"]
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  grads, acts = jax.grad(score, has_aux=True)(zeros)
  height, width = images.shape[1:3]
  return jnp.stack([_grad_cam_map(a, grads["backbone"][l], height, width)
                    for a, l in zip(acts, layers)], axis=1)


def cam_figure(images: np.ndarray, heatmaps: Mapping[str, np.ndarray], row_titles: Sequence[str],
               path: str | os.PathLike, *, alpha: float = 0.5, panel: float = 1.6) -> None:
  """Figures 5-6: one row per image, the image then its overlay for each layer.

  Args:
    images: (N, H, W, 3) uint8.
    heatmaps: layer name (the column title, e.g. "block05") -> (N, H, W) maps in [0, 1].
    row_titles: N titles on the left, e.g. "real, p(fake)=0.12".
    path: the PNG written (plotting.save_figure).
    alpha: the heat map's weight in the blend; panel: a panel's side in inches.
  """
  images = np.asarray(images)
  if len(row_titles) != len(images):
    raise ValueError(f"{len(row_titles)} row titles for {len(images)} images")
  for name, maps in heatmaps.items():
    if np.shape(maps) != images.shape[:3]:
      raise ValueError(f"heat maps of {name!r} have shape {np.shape(maps)}, the images "
                       f"{images.shape[:3]}")
  rows, cols = len(images), 1 + len(heatmaps)
  fig, ax = plotting.figure(panel * cols, panel * rows)
  fig.delaxes(ax)
  axes = fig.subplots(rows, cols, squeeze=False)
  titles = ["image", *heatmaps]
  for row in range(rows):
    panels = [images[row]] + [overlay(images[row], maps[row], alpha)
                              for maps in heatmaps.values()]
    for col, picture in enumerate(panels):
      axis = axes[row, col]
      axis.imshow(picture)
      axis.set_xticks([])
      axis.set_yticks([])
      if row == 0:
        axis.set_title(titles[col], fontsize=9)
    axes[row, 0].set_ylabel(row_titles[row], fontsize=9)
  fig.subplots_adjust(wspace=0.04, hspace=0.04)
  plotting.save_figure(fig, path)
