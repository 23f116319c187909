"""EfficientNet family: the published EfficientNetV2-S layout, sown blocks, depthwise convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agg_jax import models
from agg_jax.models import efficientnet, layers

# EfficientNetV2-S at 256x256 (Tan & Le 2021, Table 4): (blocks, height, channels) per stage.
V2S_STAGES_AT_256 = [(2, 128, 24), (4, 64, 48), (4, 32, 64), (6, 16, 128), (9, 16, 160),
                     (15, 8, 256)]


def _shapes(model, size, **apply_kwargs):
  x = jnp.zeros((2, size, size, 3), jnp.uint8)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  return variables, jax.eval_shape(
      lambda v: model.apply(v, x, mutable=["intermediates"], **apply_kwargs), variables)


def test_efficientnetv2_s_sows_40_blocks_with_published_shapes_at_256():
  model = models.create("efficientnetv2_s", head=None)
  _, ((logits, endpoints), state) = _shapes(model, 256)
  sown = state["intermediates"]
  expected = [(2, h, h, c) for n, h, c in V2S_STAGES_AT_256 for _ in range(n)]
  assert list(sown) == [f"block{i:02d}" for i in range(40)]
  assert [sown[name][0].shape for name in sown] == expected
  assert [endpoints[name].shape for name in sown] == expected
  assert logits.shape == (2, 1000)


def test_efficientnetv2_s_parameter_count_matches_keras():
  # keras.applications.EfficientNetV2S: 21,612,360 parameters, of which 153,872 are
  # batch-norm moving statistics.
  variables, _ = _shapes(models.create("efficientnetv2_s", head=None), 224)
  assert models.count_params(variables["params"]) == 21_458_488
  assert models.count_params(variables["batch_stats"]) == 153_872


def test_sown_intermediates_are_the_returned_block_outputs():
  model = models.create("efficientnetv2_tiny", head=None)
  x = jax.random.randint(jax.random.key(1), (2, 64, 64, 3), 0, 256).astype(jnp.uint8)
  variables = model.init(jax.random.key(0), x)
  (_, endpoints), state = model.apply(variables, x, mutable=["intermediates"])
  assert list(state["intermediates"]) == model.block_names()
  for name, (value,) in state["intermediates"].items():
    np.testing.assert_array_equal(value, endpoints[name])


def test_block_stages_follow_the_block_string():
  model = models.create_backbone("efficientnetv2_s")
  assert model.block_stages() == [s for s, (n, _, _) in enumerate(V2S_STAGES_AT_256)
                                  for _ in range(n)]


@pytest.mark.parametrize("text, message", [
    ("xx_r1_k3_s1_c8", "bad block string"),
    ("ir_r1_k3_s1", "missing ['channels']"),
    ("ir_r1_k3_s1_c8_q3", "unknown option 'q3'"),
])
def test_bad_block_string_is_named(text, message):
  with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
    efficientnet.parse_stage(text)


def test_block_string_parses_every_field():
  stage = efficientnet.parse_stage("ir_r6_k3_s2_e4_c128_se0.25")
  assert stage == efficientnet.StageSpec("ir", 6, 3, 2, 4.0, 128, 0.25, None)
  assert efficientnet.parse_stage("cn_r2_k3_s1_e1_c24_skip").skip is True


@pytest.mark.parametrize("size", [15, 16])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["same", "symmetric"])
@pytest.mark.parametrize("kernel", [3, 5])
def test_shifted_depthwise_matches_grouped_convolution(size, stride, padding, kernel):
  kx, kk = jax.random.split(jax.random.key(size * stride * kernel))
  x = jax.random.normal(kx, (2, size, size + 1, 8))
  w = jax.random.normal(kk, (kernel, kernel, 1, 8))
  shifted = layers.depthwise_conv(x, w, stride, "shifted", padding)
  grouped = layers.depthwise_conv(x, w, stride, "xla", padding)
  assert shifted.shape == grouped.shape
  np.testing.assert_allclose(shifted, grouped, rtol=1e-5, atol=1e-5)


def test_same_padding_matches_tensorflow_rule():
  # TF "SAME": output ceil(n / s), the odd padding pixel after.
  assert layers.same_padding(256, 3, 2) == (0, 1)
  assert layers.same_padding(255, 3, 2) == (1, 1)
  assert layers.same_padding(16, 3, 1) == (1, 1)


def test_model_accepts_uint8_and_float_pixels_alike():
  model = models.create("efficientnetv2_tiny", head=None)
  x = jax.random.randint(jax.random.key(2), (1, 32, 32, 3), 0, 256)
  variables = model.init(jax.random.key(0), x.astype(jnp.uint8))
  a, _ = model.apply(variables, x.astype(jnp.uint8))
  b, _ = model.apply(variables, x.astype(jnp.float32))
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_rematerialised_detector_trains_exactly_as_the_plain_one():
  """model.remat changes what the backward pass keeps, not the loss, gradients or statistics
  (both policies on a small module: test_layers)."""
  x = jax.random.randint(jax.random.key(2), (2, 32, 32, 3), 0, 256).astype(jnp.uint8)
  plain = models.create("efficientnetv2_tiny", hidden=(8,), drop_path_rate=0.0)
  rematted = models.create("efficientnetv2_tiny", hidden=(8,), drop_path_rate=0.0, remat="block")
  variables = plain.init(jax.random.key(0), x)

  def loss(params, model):
    (logits, primitives), updates = model.apply({**variables, "params": params}, x, train=True,
                                                mutable=["batch_stats"])
    return jnp.sum(logits ** 2) + jnp.sum(primitives["primitives"] ** 2), updates

  def grad(model):  # jitted: op by op, the tiny detector's backward pass takes a minute
    return jax.jit(jax.value_and_grad(lambda p: loss(p, model), has_aux=True))(
        variables["params"])
  (want, want_stats), want_grads = grad(plain)
  (got, got_stats), got_grads = grad(rematted)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for a, b in zip(jax.tree.leaves((got_grads, got_stats)),
                  jax.tree.leaves((want_grads, want_stats))):
    # recomputation reorders float32 sums (batch-norm bias gradients differ by up to 2e-5 of
    # their scale): equal to 5e-5 of each gradient's scale
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5 * float(np.abs(b).max()))
