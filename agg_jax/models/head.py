"""The paper's aggregation head (section III-B, eqs. 2-3) and the logits baseline head.

For every aggregated block output o_i the head computes a primitive projection
p_i = MLP(AvgPool2D(o_i)) in R^10 (eq. 2): average pooling with a square window (stride = window,
no padding, the window never larger than the map), flatten, dense -> ReLU -> dense -> ReLU ->
dense to 10. The primitives of all blocks are concatenated and one dense layer gives the score
s_final = w^T [p_1, ..., p_L] + b (eq. 3), trained with sigmoid binary cross-entropy (eq. 4).

Mixed precision (`dtype=bfloat16`): the pooling sums in float32 (Flax's `avg_pool` would sum
in bfloat16), the hidden layers of each MLP run in `dtype`, and the primitives and the score are
computed in float32: the last dense of each projection (hidden -> 10) and the aggregate dense
(L * 10 -> 1) are a negligible share of the head's work, and the importance analysis
(section IV-D) reads w_i * p_i, which then sum exactly to the score.
"""

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from agg_jax.models import layers


def pool_window(window: int, height: int, width: int) -> tuple[int, int]:
  """The pooling window, shrunk to the feature map where the map is smaller."""
  return min(window, height), min(window, width)


def average_pool(x: jax.Array, window: tuple[int, int]) -> jax.Array:
  """Average pooling of (B, H, W, C) with stride = window and no padding (the rows and columns
  past the last whole window are dropped), as `nn.avg_pool(x, window, window, "VALID")`
  computes it.

  The forward pass sums the k_h * k_w strided slices of x: one loop over it, where a crop, a
  reshape and a mean first copy the crop (1.4-1.9x slower on CPU at the detector's shapes,
  bench/bench_layers.py). The gradient is a broadcast (a custom VJP), where the reduce-window of
  `avg_pool` differentiates into a scatter that XLA:CPU runs 10-40x slower."""
  return _average_pool(x, tuple(window), x.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _average_pool(x, window, shape):
  (k_h, k_w), (_, h, w, _) = window, shape
  accumulate = jnp.promote_types(x.dtype, jnp.float32)  # as jnp.mean sums bfloat16
  parts = layers.strided_windows(x, window, window, (h // k_h, w // k_w))
  total = sum(part.astype(accumulate) for _, _, part in parts)
  return (total / (k_h * k_w)).astype(x.dtype)


def _average_pool_fwd(x, window, shape):
  return _average_pool(x, window, shape), None


def _average_pool_bwd(window, shape, _, grad):
  """Each window's gradient spread over its pixels, zero on the dropped rows and columns."""
  (k_h, k_w), (b, h, w, c) = window, shape
  rows, cols = grad.shape[1:3]
  spread = jnp.broadcast_to((grad / (k_h * k_w))[:, :, None, :, None],
                            (b, rows, k_h, cols, k_w, c)).reshape(b, rows * k_h, cols * k_w, c)
  return (jnp.pad(spread, ((0, 0), (0, h - rows * k_h), (0, w - cols * k_w), (0, 0))),)


_average_pool.defvjp(_average_pool_fwd, _average_pool_bwd)


class PrimitiveProjection(nn.Module):
  """p_i = MLP(AvgPool2D(o_i)), eq. 2 of the paper."""
  window: int
  hidden: Sequence[int] = (256, 256)
  num_primitives: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    """Returns the float32 primitives (B, num_primitives)."""
    window = pool_window(self.window, features.shape[1], features.shape[2])
    x = average_pool(features.astype(jnp.float32), window)
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for i, width in enumerate(self.hidden):
      x = nn.relu(layers.Dense(width, dtype=self.dtype, name=f"dense{i}")(x))
    return layers.Dense(self.num_primitives, dtype=jnp.float32,
                        name=f"dense{len(self.hidden)}")(x)


class AggregationHead(nn.Module):
  """Primitive projections of the chosen blocks, concatenated, one dense layer to the score.

  Attributes:
    windows: block name -> pooling window, in forward order; exactly these blocks are
      aggregated (the classifier resolves which blocks and windows from the config).
    dtype: the computation dtype of the projections' hidden layers; the primitives and the score
      are float32 whatever it is (module docstring).
  """
  windows: Mapping[str, int]
  hidden: Sequence[int] = (256, 256)
  num_primitives: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, endpoints: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Returns the score logits (B,) and the primitives (B, L, num_primitives)."""
    missing = [name for name in self.windows if name not in endpoints]
    if missing:
      raise KeyError(f"aggregation head expects blocks {missing} that the backbone does not "
                     f"produce (it has {list(endpoints)})")
    primitives = jnp.stack([
        PrimitiveProjection(window, tuple(self.hidden), self.num_primitives, self.dtype,
                            name=f"projection_{name}")(endpoints[name])
        for name, window in self.windows.items()], axis=1)
    flat = primitives.reshape(primitives.shape[0], -1)
    logits = layers.Dense(1, dtype=jnp.float32, name="aggregate")(flat)[:, 0]
    return logits, primitives


def importance(primitives: jax.Array, aggregate_kernel: jax.Array) -> jax.Array:
  """Per-primitive importance w_i * p_i (section IV-D): (B, L, P) * kernel reshaped to (L, P)."""
  return primitives * aggregate_kernel.reshape(primitives.shape[1:])
