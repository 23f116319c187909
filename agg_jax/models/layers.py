"""Building blocks shared by the backbones: TF "SAME" depthwise convolution, squeeze-excite, drop path.

Depthwise convolution is written as k*k shifted multiply-adds over the channels-last tensor
(`implementation="shifted"`): XLA's grouped convolution is several times slower on CPU (see
docs/architecture.md, "Depthwise convolutions"); `implementation="xla"` uses
`lax.conv_general_dilated` with `feature_group_count=C`, the better choice on some accelerators.
Both give the same result.
"""

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

DepthwiseImpl = Literal["shifted", "xla"]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF "SAME" padding (before, after) for one spatial axis: the extra pixel goes after."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int = 1,
                   implementation: DepthwiseImpl = "shifted", padding: str = "same") -> jax.Array:
  """Depthwise 2D convolution.

  Args:
    x: (N, H, W, C) input.
    kernel: (k, k, 1, C) kernel, Flax's layout for a grouped convolution with C groups.
    stride: the same stride on both spatial axes.
    implementation: "shifted" (k*k multiply-adds, fast on CPU) or "xla" (grouped convolution).
    padding: "same" (TensorFlow: the odd pixel goes after) or "symmetric" (PyTorch: k // 2 on
      each side).
  """
  k_h, k_w, _, channels = kernel.shape
  if x.shape[-1] != channels:
    raise ValueError(f"depthwise kernel has {channels} channels, input has {x.shape[-1]}")
  if padding == "same":
    pads = (same_padding(x.shape[1], k_h, stride), same_padding(x.shape[2], k_w, stride))
  elif padding == "symmetric":
    pads = ((k_h // 2, k_h // 2), (k_w // 2, k_w // 2))
  else:
    raise ValueError(f"unknown padding {padding!r}: use 'same' or 'symmetric'")
  if implementation == "xla":
    return lax.conv_general_dilated(
        x, kernel, window_strides=(stride, stride), padding=pads,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)
  if implementation != "shifted":
    raise ValueError(f"unknown depthwise implementation {implementation!r}: use 'shifted' or 'xla'")
  # bfloat16 products are summed in float32 and rounded once, as the grouped convolution (and
  # nn.Conv) accumulates them: k*k roundings in bfloat16 cost 2.5x the error of one.
  result_dtype = jnp.result_type(x, kernel)
  accumulate = jnp.promote_types(result_dtype, jnp.float32)
  padded = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  out_h = (padded.shape[1] - k_h) // stride + 1
  out_w = (padded.shape[2] - k_w) // stride + 1
  out = None
  for i in range(k_h):
    for j in range(k_w):
      window = lax.slice(padded, (0, i, j, 0),
                         (padded.shape[0], i + (out_h - 1) * stride + 1,
                          j + (out_w - 1) * stride + 1, channels),
                         (1, stride, stride, 1))
      term = window.astype(accumulate) * kernel[i, j, 0].astype(accumulate)
      out = term if out is None else out + term
  return out.astype(result_dtype)


class DepthwiseConv(nn.Module):
  """Depthwise convolution without bias; parameter `kernel` of shape (k, k, 1, C)."""
  kernel_size: int
  stride: int = 1
  implementation: DepthwiseImpl = "shifted"
  padding: str = "same"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                        (self.kernel_size, self.kernel_size, 1, x.shape[-1]), jnp.float32)
    return depthwise_conv(x.astype(self.dtype), kernel.astype(self.dtype), self.stride,
                          self.implementation, self.padding)


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation: global pool, 1x1 reduce + activation, 1x1 expand + sigmoid gate."""
  reduced_features: int
  activation: Any = nn.silu
  gate: Any = nn.sigmoid
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = self.activation(nn.Conv(self.reduced_features, (1, 1), dtype=self.dtype, name="reduce")(s))
    s = self.gate(nn.Conv(x.shape[-1], (1, 1), dtype=self.dtype, name="expand")(s))
    return x * s


class DropPath(nn.Module):
  """Stochastic depth: drops a whole residual branch per example while training."""
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0], 1, 1, 1))
    return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


def emit_endpoint(module: nn.Module, endpoints: dict, name: str, x: jax.Array) -> jax.Array:
  """Publishes a block output, the contract of every backbone: sown into `intermediates` and
  added to the returned `endpoints`. With the backbone's `perturb_endpoints` set it first passes
  through `Module.perturb`, so `jax.grad` by a zero perturbation is the gradient by the block's
  output (Grad-CAM); off (the default), the model and its variables are unchanged."""
  if module.perturb_endpoints:
    x = module.perturb(name, x)
  module.sow("intermediates", name, x)
  endpoints[name] = x
  return x


def check_num_blocks(num_blocks: int | None, total: int, include_top: bool) -> int | None:
  """The block count after which a cut backbone returns (it has no top); None: not cut."""
  if num_blocks is None:
    return None
  if include_top or not 0 < num_blocks <= total:
    raise ValueError(f"num_blocks={num_blocks}: needs include_top=False and 1..{total} blocks")
  return num_blocks
