"""Mixed precision (config.model.dtype="bfloat16"): bfloat16 compute, float32 parameters,
batch statistics, logits, primitives and gradients; bfloat16 outputs close to float32's."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from agg_jax import models
from agg_jax.models import head as head_lib
from agg_jax.models import layers

# Tolerances of bfloat16 against float32 with the same variables, in training mode: bfloat16
# keeps 8 significant bits, and its rounding compounds through the blocks.
# Logits: max |difference| / std of the float32 logits over the batch.
LOGITS_TOLERANCE = 0.15
# Primitives: rms of the difference / rms of the float32 primitives.
PRIMITIVES_TOLERANCE = 0.1


# EfficientNetV2's two kinds of block, one each (fused-MBConv; MBConv with depthwise convolution
# and squeeze-excite): a model small enough to compile its train step in seconds.
ARCH = "er_r1_k3_s2_e4_c16 | ir_r1_k3_s2_e4_c32_se0.25"


def _models(head):
  """The float32 and bfloat16 classifiers on a two-block EfficientNetV2."""

  def create(dtype):
    backbone = models.EfficientNet(ARCH, stem_features=8, head_features=32,
                                   include_top=head == "logits", drop_path_rate=0.0, dtype=dtype)
    if head == "logits":
      return models.LogitsClassifier(backbone)
    windows = dict.fromkeys(backbone.block_names(), 7)
    return models.AggregatedClassifier(backbone, windows, hidden=(8,), dtype=dtype)

  return create(jnp.float32), create(jnp.bfloat16)


def _images(side=32, batch=8):
  return jax.random.randint(jax.random.key(1), (batch, side, side, 3), 0, 256).astype(jnp.uint8)


def _dtypes(tree) -> set[str]:
  return {str(leaf.dtype) for leaf in jax.tree.leaves(tree)}


def _train_step(model, variables, images, labels, with_grads=True):
  """train.py's loss (and gradients) with the training-mode outputs and the sown blocks."""

  def loss_fn(params):  # train.bce_loss, without importing the training code (seconds)
    (logits, aux), updates = model.apply(
        {**variables, "params": params}, images, train=True,
        mutable=["batch_stats", "intermediates"], rngs={"dropout": jax.random.key(2)})
    loss = optax.sigmoid_binary_cross_entropy(logits, labels).mean()
    return loss, dict(logits=logits, aux=aux, updates=updates)

  if not with_grads:
    loss, outputs = jax.jit(loss_fn)(variables["params"])
    return dict(loss=loss, **outputs)
  (loss, outputs), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      variables["params"])
  return dict(loss=loss, grads=grads, **outputs)


@pytest.fixture(scope="module", params=["aggregation", "logits"])
def steps(request):
  """The bfloat16 model, its initial variables, its train step and float32's forward pass."""
  f32, bf16 = _models(request.param)
  images = _images()
  labels = jnp.arange(images.shape[0]) % 2
  # An "rbg" key: the initialisation compiles in a third of the time it takes with threefry.
  variables = jax.jit(bf16.init)(jax.random.key(0, impl="rbg"), images)
  # The float32 gradients are left out: their compilation would double the tests' time.
  return dict(model=bf16, variables=variables, bf16=_train_step(bf16, variables, images, labels),
              f32=_train_step(f32, variables, images, labels, with_grads=False))


def test_config_dtype_sets_the_computation_dtype():
  for dtype in ("float32", "bfloat16"):
    config = ml_collections.ConfigDict(dict(
        name="efficientnetv2_tiny", head="aggregation", blocks="all", pool_window=7,
        hidden=(8,), num_primitives=10, drop_path_rate=0.0, dtype=dtype))
    model = models.from_config(config)
    assert model.dtype == model.backbone.dtype == jnp.dtype(dtype)


def test_bfloat16_computes_in_bfloat16_and_keeps_float32_state_and_outputs(steps):
  variables, step = steps["variables"], steps["bf16"]
  assert _dtypes(variables["params"]) == {"float32"}
  assert _dtypes(variables["batch_stats"]) == {"float32"}
  assert step["logits"].dtype == jnp.float32 and np.isfinite(step["logits"]).all()
  if "primitives" in step["aux"]:
    # Eq. 3 in float32 whatever the dtype: importance w_i * p_i sums to the score - b.
    aggregate = variables["params"]["head"]["aggregate"]
    parts = head_lib.importance(step["aux"]["primitives"], aggregate["kernel"])
    assert parts.dtype == jnp.float32
    np.testing.assert_allclose(parts.sum(axis=(1, 2)) + aggregate["bias"][0], step["logits"],
                               rtol=1e-5, atol=1e-6)
  # Batch statistics are updated (training mode) and stay float32.
  stats = step["updates"]["batch_stats"]
  assert _dtypes(stats) == {"float32"}
  assert not all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(stats), jax.tree.leaves(variables["batch_stats"])))
  # The blocks compute in bfloat16: every sown block output is bfloat16.
  blocks = step["updates"]["intermediates"]["backbone"]
  assert len(blocks) == len(steps["model"].backbone.block_names())
  assert _dtypes(blocks) == {"bfloat16"}


def test_bfloat16_outputs_are_close_to_float32_with_the_same_variables(steps):
  want, got = steps["f32"], steps["bf16"]
  want_logits = np.asarray(want["logits"])
  assert np.abs(got["logits"] - want_logits).max() <= LOGITS_TOLERANCE * want_logits.std()
  if "primitives" in want["aux"]:
    rms = lambda a: np.sqrt(np.mean(np.square(a)))
    want_primitives = np.asarray(want["aux"]["primitives"])
    assert rms(got["aux"]["primitives"] - want_primitives) <= PRIMITIVES_TOLERANCE * rms(
        want_primitives)
  # The running statistics (float32 sums of bfloat16 activations) follow the float32 ones.
  for want_stat, got_stat in zip(jax.tree.leaves(want["updates"]["batch_stats"]),
                                 jax.tree.leaves(got["updates"]["batch_stats"])):
    np.testing.assert_allclose(got_stat, want_stat, rtol=0.01, atol=0.01)


def test_bce_gradients_through_bfloat16_are_float32(steps):
  want, got = steps["f32"], steps["bf16"]
  assert got["loss"].dtype == jnp.float32 and abs(got["loss"] - want["loss"]) < 0.01
  grads = jax.tree.leaves(got["grads"])
  assert _dtypes(grads) == {"float32"}
  # Every parameter gets a finite, nonzero gradient: nothing underflows to zero in bfloat16.
  assert all(np.isfinite(g).all() and np.abs(g).max() > 0 for g in grads)


def test_primitive_pooling_sums_in_float32():
  # Flax's avg_pool sums in its input's dtype: in bfloat16 this window would average to 36.5,
  # not 37.43. Without hidden layers the projection is one float32 dense on the pooled features
  # rounded once to bfloat16.
  features = jnp.ones((1, 7, 7, 1), jnp.bfloat16).at[:, 0].set(256)
  projection = head_lib.PrimitiveProjection(7, hidden=(), num_primitives=2, dtype=jnp.bfloat16)
  params = projection.init(jax.random.key(0), features)["params"]
  pooled = jnp.asarray((256 * 7 + 42) / 49, jnp.bfloat16).astype(jnp.float32)
  got = projection.apply({"params": params}, features)
  assert got.dtype == jnp.float32
  dense = params["dense0"]
  np.testing.assert_allclose(got[0], pooled * dense["kernel"][0] + dense["bias"], rtol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_shifted_depthwise_rounds_like_the_grouped_convolution_in_bfloat16(stride):
  # The k*k products are summed in float32 and rounded once, as XLA's grouped convolution does
  # (on CPU to the bit; other backends may round a last bit differently).
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 32)).astype(jnp.bfloat16)
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 32)).astype(jnp.bfloat16)
  conv = jax.jit(layers.depthwise_conv, static_argnums=(2, 3))
  shifted = conv(x, kernel, stride, "shifted")
  assert shifted.dtype == jnp.bfloat16
  exact = conv(x.astype(jnp.float32), kernel.astype(jnp.float32), stride, "shifted")
  np.testing.assert_array_equal(shifted, exact.astype(jnp.bfloat16))
  grouped = conv(x, kernel, stride, "xla")
  np.testing.assert_allclose(np.float32(shifted), np.float32(grouped), rtol=2**-8, atol=2**-8)
