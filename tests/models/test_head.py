"""The aggregation head (paper eqs. 2-3) and the classifiers built on it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agg_jax import models
from agg_jax.models import head as head_lib


def _init(model, size=64):
  x = jnp.zeros((2, size, size, 3), jnp.uint8)
  return jax.eval_shape(model.init, jax.random.key(0), x)


def test_head_consumes_exactly_the_configured_blocks():
  model = models.create("efficientnetv2_tiny", blocks=(0, 3, 5), pool_window=4, hidden=(16,))
  head = _init(model)["params"]["head"]
  assert sorted(head) == ["aggregate", "projection_block00", "projection_block03",
                          "projection_block05"]
  assert head["aggregate"]["kernel"].shape == (3 * 10, 1)


def test_all_blocks_give_ten_primitives_each():
  model = models.create("efficientnetv2_tiny", hidden=(8, 8))
  variables = model.init(jax.random.key(0), jnp.zeros((2, 64, 64, 3), jnp.uint8))
  logits, aux = model.apply(variables, jnp.zeros((2, 64, 64, 3), jnp.uint8))
  blocks = len(model.backbone.block_names())
  assert logits.shape == (2,)
  assert aux["primitives"].shape == (2, blocks, 10)


def test_score_is_linear_in_the_primitives():
  # Eq. 3: s_final = w^T [p_1, ..., p_L] + b, so importance w_i * p_i sums to s_final - b.
  model = models.create("efficientnetv2_tiny", hidden=(8,))
  x = jax.random.randint(jax.random.key(3), (3, 32, 32, 3), 0, 256).astype(jnp.uint8)
  variables = model.init(jax.random.key(0), x)
  logits, aux = model.apply(variables, x)
  aggregate = variables["params"]["head"]["aggregate"]
  primitives, kernel = np.asarray(aux["primitives"]), np.asarray(aggregate["kernel"])
  batch, num_blocks, num_primitives = primitives.shape
  assert kernel.shape == (num_blocks * num_primitives, 1)
  # Block l's primitives fill rows l * P ... l * P + P - 1 of the concatenation [p_1, ..., p_L].
  expected = np.zeros_like(primitives)
  for b in range(batch):
    for l in range(num_blocks):
      for k in range(num_primitives):
        expected[b, l, k] = primitives[b, l, k] * kernel[l * num_primitives + k, 0]
  parts = np.asarray(head_lib.importance(aux["primitives"], aggregate["kernel"]))
  np.testing.assert_allclose(parts, expected, rtol=1e-6, atol=1e-7)
  # The model's own score is that weighted sum: the rows are read in the same order.
  np.testing.assert_allclose(expected.sum(axis=(1, 2)) + aggregate["bias"][0], logits, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(parts.sum(axis=(1, 2)) + aggregate["bias"][0], logits, rtol=1e-5,
                             atol=1e-5)


def test_projection_mlp_follows_eq_2():
  # AvgPool (window 7, stride 7, valid) -> flatten -> dense -> ReLU -> dense -> ReLU -> dense(10)
  proj = head_lib.PrimitiveProjection(window=7, hidden=(32, 16))
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 5))
  params = proj.init(jax.random.key(1), x)["params"]
  assert params["dense0"]["kernel"].shape == (2 * 2 * 5, 32)
  pooled = x[:, :14, :14].reshape(2, 2, 7, 2, 7, 5).mean(axis=(2, 4)).reshape(2, -1)
  h = jax.nn.relu(pooled @ params["dense0"]["kernel"] + params["dense0"]["bias"])
  h = jax.nn.relu(h @ params["dense1"]["kernel"] + params["dense1"]["bias"])
  expected = h @ params["dense2"]["kernel"] + params["dense2"]["bias"]
  np.testing.assert_allclose(proj.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-5)


def test_pool_window_never_exceeds_the_map():
  assert head_lib.pool_window(14, 8, 8) == (8, 8)
  assert head_lib.pool_window(7, 16, 16) == (7, 7)


def test_paper_scale_parameter_counts_at_256():
  # Window 7 and hidden 256 on all 40 blocks: 15.0M analysis parameters (paper: about 16M).
  counts = models.param_counts(_init(models.create("efficientnetv2_s"), 256)["params"])
  assert counts["head"] == 15_000_353
  assert counts["backbone"] == 19_847_248  # without the ImageNet top the head does not use
  assert len(counts["projections"]) == 40
  paper_windows = models.create("efficientnetv2_s", pool_window=(14, 14, 14, 7, 7, 7))
  assert models.param_counts(_init(paper_windows, 256)["params"])["head"] == 8_033_057


def test_blocks_given_as_text_like_a_command_line_override():
  model = models.create("efficientnetv2_tiny", blocks="(1, 4)", pool_window=4, hidden=(8,))
  assert list(model.windows) == ["block01", "block04"]


def test_logits_baseline_has_a_binary_head_on_1000_logits():
  params = _init(models.create("efficientnetv2_tiny", head="logits"))["params"]
  assert params["head"]["kernel"].shape == (1000, 1)


@pytest.mark.parametrize("blocks, pool_window, message", [
    ((0, 99), 7, "no block 99"),
    ("some", 7, "no block 'some'"),
    ("()", 7, "'all' or a list"),
    ("all", (7, 7), "2 entries; the backbone has 6 stages"),
])
def test_bad_head_settings_are_explained(blocks, pool_window, message):
  with pytest.raises(ValueError, match=message):
    models.create("efficientnetv2_tiny", blocks=blocks, pool_window=pool_window)


def test_the_backbone_runs_only_as_deep_as_the_head_reads():
  cut = models.create("efficientnetv2_tiny", blocks=(1, 3), hidden=(8,))
  assert cut.backbone.num_blocks == 4
  assert sorted(k for k in _init(cut)["params"]["backbone"] if k.startswith("blocks_")) == [
      "blocks_0", "blocks_1", "blocks_2", "blocks_3"]
  assert models.create("efficientnetv2_tiny", hidden=(8,)).backbone.num_blocks is None
  stem_only = _init(models.create("xception", blocks=(0,)), size=96)["params"]["backbone"]
  assert sorted(stem_only) == ["stem1_bn", "stem1_conv", "stem2_bn", "stem2_conv"]
  # The baseline head still reads the logits of the whole, uncut backbone.
  baseline = models.create("efficientnetv2_tiny", head="logits")
  variables = jax.jit(baseline.init)(jax.random.key(0), jnp.zeros((2, 32, 32, 3), jnp.uint8))
  assert "classifier" in variables["params"]["backbone"]
  logits, _ = jax.jit(baseline.apply)(variables, jnp.zeros((2, 32, 32, 3), jnp.uint8))
  assert logits.shape == (2,)
