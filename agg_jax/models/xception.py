"""Xception (Chollet 2017), the FaceForensics++ baseline; with the aggregation head: Xception++.

Section IV of the paper adds the aggregation head to Xception ("Xception++", Tables I and II).
The network is Keras' `keras.applications.Xception` (and Cadene's PyTorch port used by
FaceForensics++): an entry flow (two convolutions, then three residual blocks of separable
convolutions with stride 2), a middle flow of eight residual blocks at 728 channels, and an exit
flow (a residual block with stride 2, then two separable convolutions to 2048 channels).

Every block output is sown into `intermediates` as `block00..block13`: block00 is the two stem
convolutions, block01-03 the entry-flow blocks, block04-11 the middle flow, block12-13 the exit
flow (Keras' block1..block14). Stages for per-stage pooling windows: entry 0, middle 1, exit 2.
Parameters live under `stem1_*`, `stem2_*`, `blocks_1..blocks_12` and `exit_*`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from agg_jax.models import layers
from agg_jax.models.efficientnet import Padding, normalize_pixels
from agg_jax.models.layers import check_num_blocks, emit_endpoint

# (output features of each separable convolution, stride of the block) per residual block.
ENTRY = (((128, 128), 2), ((256, 256), 2), ((728, 728), 2))
MIDDLE = (((728, 728, 728), 1),) * 8
EXIT = (((728, 1024), 2),)


class SeparableConv(nn.Module):
  """Depthwise 3x3 then pointwise 1x1 convolution, no bias (Keras `SeparableConv2D`)."""
  features: int
  padding: Padding
  depthwise: layers.DepthwiseImpl
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = layers.DepthwiseConv(3, 1, self.depthwise, self.padding, self.dtype, name="depthwise")(x)
    return layers.PointwiseConv(self.features, dtype=self.dtype, name="pointwise")(x)


class XceptionBlock(nn.Module):
  """Residual block: [ReLU, separable conv, BN] per entry of `features`, max pool if strided.

  The shortcut is a strided 1x1 convolution + BN where the shape changes, the identity otherwise.
  The first block of the entry flow starts without ReLU (its input is already activated).
  """
  features: tuple[int, ...]
  stride: int
  start_with_relu: bool
  padding: Padding
  bn_epsilon: float
  depthwise: layers.DepthwiseImpl
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.99,
                                   epsilon=self.bn_epsilon, dtype=self.dtype, name=name)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.features[-1]:
      shortcut = nn.Conv(self.features[-1], (1, 1), (self.stride, self.stride), use_bias=False,
                         dtype=self.dtype, name="shortcut")(x)
      shortcut = bn("shortcut_bn")(shortcut)
    for i, features in enumerate(self.features):
      if i > 0 or self.start_with_relu:
        x = nn.relu(x)
      x = SeparableConv(features, self.padding, self.depthwise, self.dtype, name=f"sep{i + 1}")(x)
      x = bn(f"bn{i + 1}")(x)
    if self.stride != 1:
      pad = "SAME" if self.padding == "same" else ((1, 1), (1, 1))
      x = nn.max_pool(x, (3, 3), (self.stride, self.stride), padding=pad)
    return x + shortcut


class Xception(nn.Module):
  """Xception backbone; returns `(logits or None, endpoints)` like the EfficientNet family."""
  num_classes: int = 1000
  include_top: bool = True
  input_norm: str = "inception"
  padding: Padding = "same"
  bn_epsilon: float = 1e-3
  depthwise: layers.DepthwiseImpl = "shifted"
  dtype: Any = jnp.float32  # as EfficientNet's
  num_blocks: int | None = None  # as EfficientNet's
  perturb_endpoints: bool = False  # as EfficientNet's

  def block_stages(self) -> list[int]:
    """Stage index of every block: entry flow 0 (stem + 3 blocks), middle 1, exit 2."""
    return [0] * (1 + len(ENTRY)) + [1] * len(MIDDLE) + [2] * (len(EXIT) + 1)

  def block_names(self) -> list[str]:
    return [f"block{i:02d}" for i in range(len(self.block_stages()))]

  def _conv_bn_relu(self, x, features, kernel, stride, padding, train, name):
    x = nn.Conv(features, (kernel, kernel), (stride, stride), padding=padding, use_bias=False,
                dtype=self.dtype, name=f"{name}_conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=self.bn_epsilon,
                     dtype=self.dtype, name=f"{name}_bn")(x)
    return nn.relu(x)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    x = normalize_pixels(images, self.input_norm).astype(self.dtype)
    endpoints = {}
    last = check_num_blocks(self.num_blocks, len(self.block_names()), self.include_top)
    x = self._conv_bn_relu(x, 32, 3, 2, "VALID", train, "stem1")
    x = self._conv_bn_relu(x, 64, 3, 1, "VALID", train, "stem2")
    x = emit_endpoint(self, endpoints, "block00", x)
    for index, (features, stride) in enumerate(ENTRY + MIDDLE + EXIT, start=1):
      if index == last:
        return None, endpoints
      x = XceptionBlock(features, stride, index > 1, self.padding, self.bn_epsilon,
                        self.depthwise, self.dtype, name=f"blocks_{index}")(x, train)
      x = emit_endpoint(self, endpoints, f"block{index:02d}", x)
    if last == len(endpoints):  # the exit block is not needed
      return None, endpoints
    for i, features in enumerate((1536, 2048)):
      x = SeparableConv(features, self.padding, self.depthwise, self.dtype,
                        name=f"exit_sep{i + 1}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=self.bn_epsilon,
                       dtype=self.dtype, name=f"exit_bn{i + 1}")(x)
      x = nn.relu(x)
    x = emit_endpoint(self, endpoints, f"block{len(ENTRY + MIDDLE + EXIT) + 1:02d}", x)
    if not self.include_top:
      return None, endpoints
    x = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
    return logits.astype(jnp.float32), endpoints


BACKBONES = {"xception": Xception}
