"""Trimming (paper section V, eq. 5): masked and refitted regressors, the cut backbone, AP_deg."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from agg_jax import models
from agg_jax.analysis import trimming
from agg_jax.analysis.importance import HeadInputs


def _model_config(**fields):
  return ml_collections.ConfigDict({
      "name": "efficientnetv2_tiny", "head": "aggregation", "blocks": "all", "pool_window": 4,
      "hidden": (8,), "num_primitives": 10, "dtype": "float32", "drop_path_rate": 0.0,
      "init_from": "", **fields})


def _inputs(model, variables, images, labels):
  logits, aux = jax.jit(model.apply)(variables, images)
  return HeadInputs(np.asarray(aux["primitives"]), np.asarray(logits), labels,
                    np.arange(len(labels)).astype(str))


def test_trimmed_model_cuts_the_backbone_and_scores_as_the_masked_regressor():
  config = _model_config()
  full = models.from_config(config)
  images = jax.random.randint(jax.random.key(1), (6, 32, 32, 3), 0, 256).astype(jnp.uint8)
  variables = jax.jit(full.init)(jax.random.key(0), images)
  inputs = _inputs(full, variables, images, np.arange(6) % 2)
  aggregate = variables["params"]["head"]["aggregate"]
  kernel, bias = np.asarray(aggregate["kernel"]), float(aggregate["bias"][0])
  ranking = [2, 0, 5, 1, 3, 4, 6]
  everything = trimming.trim(ranking, 7, "masked", kernel, bias, inputs)
  np.testing.assert_allclose(everything.logits(inputs.primitives), inputs.logits, rtol=1e-5,
                             atol=1e-5)
  for variant in trimming.VARIANTS:
    trimmed = trimming.trim(ranking, 2, variant, kernel, bias, inputs)
    assert trimmed.blocks == (0, 2)
    small = models.from_config(trimming.model_config(config, trimmed))
    small_variables = trimming.trimmed_variables(small, variables, trimmed, images)
    # Blocks after block02 are neither computed nor stored.
    assert sorted(k for k in small_variables["params"]["backbone"] if k.startswith("blocks_")) \
        == ["blocks_0", "blocks_1", "blocks_2"]
    assert sorted(small_variables["params"]["head"]) == ["aggregate", "projection_block00",
                                                         "projection_block02"]
    logits, _ = jax.jit(small.apply)(small_variables, images)
    np.testing.assert_allclose(logits, trimmed.logits(inputs.primitives), rtol=1e-5, atol=1e-5)
    restored = trimming.Trimmed.from_json(trimmed.to_json())
    np.testing.assert_allclose(restored.logits(inputs.primitives),
                               trimmed.logits(inputs.primitives), rtol=1e-6)
  masked = trimming.trim(ranking, 2, "masked", kernel, bias, inputs)
  # The dropped blocks' mean contribution moves into the bias: the mean logit is kept.
  np.testing.assert_allclose(masked.logits(inputs.primitives).mean(), inputs.logits.mean(),
                             rtol=1e-4, atol=1e-4)
  head = variables["params"]["head"]
  assert trimming.analysis_params(head, list(full.windows), masked) == (
      models.count_params(head["projection_block00"]) +
      models.count_params(head["projection_block02"]) + 2 * 10 + 1)


def test_refit_is_logistic_regression_on_the_kept_primitives():
  rng = np.random.default_rng(0)
  labels = np.arange(200) % 2
  primitives = rng.normal(size=(200, 3, 10)) * np.array([1.0, 50.0, 0.01])[None, :, None]
  primitives[:, 1, 0] += 400.0 * labels  # block 1 carries the label, on a large scale
  inputs = HeadInputs(primitives.astype(np.float32), np.zeros(200, np.float32), labels,
                      np.arange(200).astype(str))
  trimmed = trimming.trim([1, 0, 2], 1, "refit", np.zeros((30, 1)), 0.0, inputs)
  assert trimmed.blocks == (1,)
  reference = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
  reference.fit(primitives[:, 1], labels)
  np.testing.assert_allclose(trimmed.logits(inputs.primitives),
                             reference.decision_function(primitives[:, 1]), rtol=1e-3, atol=1e-3)
  assert trimming.average_precision(labels, trimmed.logits(inputs.primitives)) > 99


def test_ap_deg_is_equation_5():
  assert trimming.ap_deg([90.0, 80.0, 70.0], [88.0, 83.0, 70.0]) == (2 + 3 + 0) / 3


def test_sizes_end_with_the_whole_model():
  assert trimming.sizes((1, 3, 5, 10, 20), 12) == [1, 3, 5, 10, 12]
  assert trimming.sizes((3, 1, 3), 40) == [1, 3, 40]


def test_charts(tmp_path):
  rows = [{"variant": v, "size": n, "train": "gan", "test": t, "ap_entire": 90.0,
           "ap_trimmed": 90.0 - n, "analysis_params": 1000 * n}
          for v in trimming.VARIANTS for n in (1, 3) for t in ("gan", "sd21")]
  trimming.experiments_chart(tmp_path / "fig7.png", rows, "masked")
  summary = [{"variant": v, "size": n, "ap_deg": 1.0 / n, "analysis_params": 1000 * n}
             for v in trimming.VARIANTS for n in (1, 3)]
  trimming.degradation_chart(tmp_path / "fig8.png", summary)
  assert (tmp_path / "fig7.png").stat().st_size > 5000
  assert (tmp_path / "fig8.png").stat().st_size > 5000
