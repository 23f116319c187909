"""PyTorch state-dict layouts (timm, torchvision, EfficientNet-PyTorch) and bad weight files.

No timm or torchvision checkpoint can be downloaded here, so each layout is checked against key
names and shapes of the published checkpoints, then round-tripped through `.pth` and
`.safetensors` files: state dict -> our variables must give back exactly what was written.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agg_jax import models, weights
from agg_jax.weights import WeightsError, flatten, pytorch

torch = pytest.importorskip("torch", reason="PyTorch imports need torch (the 'test' extra)")

# (layout, our model, {key: shape} of the published checkpoint).
PUBLISHED = [
    ("timm", "efficientnetv2_s", {  # timm tf_efficientnetv2_s
        "conv_stem.weight": (24, 3, 3, 3), "blocks.0.0.conv.weight": (24, 24, 3, 3),
        "blocks.1.0.conv_exp.weight": (96, 24, 3, 3), "blocks.1.0.conv_pwl.weight": (48, 96, 1, 1),
        "blocks.3.0.conv_pw.weight": (256, 64, 1, 1), "blocks.3.0.conv_dw.weight": (256, 1, 3, 3),
        "blocks.3.0.se.conv_reduce.weight": (16, 256, 1, 1), "blocks.3.0.bn3.running_var": (128,),
        "blocks.5.14.conv_pwl.weight": (256, 1536, 1, 1), "conv_head.weight": (1280, 256, 1, 1),
        "classifier.weight": (1000, 1280)}),
    ("torchvision_efficientnet", "tv_efficientnetv2_s", {  # torchvision efficientnet_v2_s
        "features.0.0.weight": (24, 3, 3, 3), "features.1.0.block.0.0.weight": (24, 24, 3, 3),
        "features.2.0.block.0.0.weight": (96, 24, 3, 3),
        "features.2.0.block.1.0.weight": (48, 96, 1, 1),
        "features.4.0.block.0.0.weight": (256, 64, 1, 1),
        "features.4.0.block.1.0.weight": (256, 1, 3, 3),
        "features.4.0.block.2.fc1.weight": (16, 256, 1, 1), "features.4.0.block.3.1.bias": (128,),
        "features.6.14.block.3.0.weight": (256, 1536, 1, 1),
        "features.7.0.weight": (1280, 256, 1, 1),
        "classifier.1.weight": (1000, 1280)}),
    ("efficientnet_pytorch", "efficientnet_b0", {  # lukemelas efficientnet-b0
        "_conv_stem.weight": (32, 3, 3, 3), "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
        "_blocks.0._se_reduce.weight": (8, 32, 1, 1), "_blocks.0._se_expand.bias": (32,),
        "_blocks.1._expand_conv.weight": (96, 16, 1, 1),
        "_blocks.15._project_conv.weight": (320, 1152, 1, 1),
        "_conv_head.weight": (1280, 320, 1, 1), "_fc.weight": (1000, 1280)}),
]


def _random_variables(name, seed=0):
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.uint8)
  shapes = jax.eval_shape(models.create_backbone(name).init, jax.random.key(0), x)
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=v.shape).astype(np.float32) for k, v in flatten(shapes).items()}


def _state_dict(layout, name, variables):
  """The state dict that `layout` would store for `variables` (the inverse of the import)."""
  shapes = {k: v.shape for k, v in variables.items()}
  state = {}
  for pair in pytorch.pairs(layout, models.create_backbone(name), shapes):
    value = variables[pair.target]
    state[pair.source] = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
  return state


@pytest.mark.parametrize("layout, name, published", PUBLISHED)
def test_layout_uses_published_keys_and_round_trips(layout, name, published, tmp_path):
  variables = _random_variables(name)
  state = _state_dict(layout, name, variables)
  for key, shape in published.items():
    assert key in state, f"{layout}: no {key}"
    assert state[key].shape == shape, key
  assert pytorch.layout(state) == layout
  tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
  torch.save({**tensors, "bn1.num_batches_tracked": torch.tensor(3)} if layout == "timm"
             else tensors, tmp_path / "w.pth")
  from safetensors.torch import save_file
  save_file(tensors, str(tmp_path / "w.safetensors"))
  for file in ("w.pth", "w.safetensors"):
    got = flatten(weights.convert("torch", str(tmp_path / file), name))
    assert got.keys() == variables.keys()
    for key, value in variables.items():
      np.testing.assert_array_equal(got[key], value, err_msg=f"{file}: {key}")


def test_torchvision_weights_need_the_symmetric_padding_model(tmp_path):
  state = _state_dict("torchvision_efficientnet", "tv_efficientnetv2_s",
                      _random_variables("tv_efficientnetv2_s"))
  torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
             tmp_path / "tv.pth")
  with pytest.raises(WeightsError, match="symmetric padding.*tv_efficientnetv2_s"):
    weights.convert("torch", str(tmp_path / "tv.pth"), "efficientnetv2_s")


def test_truncated_files_are_named(tmp_path):
  state = _state_dict("efficientnet_pytorch", "efficientnet_lite0",
                      _random_variables("efficientnet_lite0"))
  torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
             tmp_path / "full.pth")
  data = (tmp_path / "full.pth").read_bytes()
  (tmp_path / "cut.pth").write_bytes(data[:len(data) // 2])
  with pytest.raises(WeightsError, match=r"cut\.pth: unreadable state dict \(truncated\?\)"):
    weights.convert("torch", str(tmp_path / "cut.pth"), "efficientnet_lite0")
  import h5py
  with h5py.File(tmp_path / "full.weights.h5", "w") as f:
    f.create_dataset("layers/conv2d/vars/0", data=np.zeros((3, 3, 3, 32), np.float32))
  data = (tmp_path / "full.weights.h5").read_bytes()
  (tmp_path / "cut.weights.h5").write_bytes(data[:len(data) // 2])
  with pytest.raises(WeightsError, match=r"cut\.weights\.h5: unreadable Keras weights file"):
    weights.convert("keras", str(tmp_path / "cut.weights.h5"), "efficientnet_b0")


def test_missing_and_mismatched_keys_name_the_first_bad_key(tmp_path):
  state = _state_dict("efficientnet_pytorch", "efficientnet_lite0",
                      _random_variables("efficientnet_lite0"))
  del state["_blocks.3._bn1.running_var"]
  torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
             tmp_path / "partial.pth")
  with pytest.raises(WeightsError,
                     match=r"1 missing key\(s\), first _blocks\.3\._bn1\.running_var"):
    weights.convert("torch", str(tmp_path / "partial.pth"), "efficientnet_lite0")
  # Lite0 weights for B0: B0's squeeze-excite has no source.
  with pytest.raises(WeightsError, match=r"missing key\(s\), first _blocks\.0\._se_reduce\.weight"):
    weights.convert("torch", str(tmp_path / "partial.pth"), "efficientnet_b0")
  # MobileNetV2 weights for EfficientNetV2-S: the stem already has another shape.
  state = _state_dict("torchvision_mobilenet", "mobilenetv2", _random_variables("mobilenetv2"))
  torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
             tmp_path / "mobilenet.pth")
  with pytest.raises(WeightsError, match=r"features\.0\.0\.weight has shape \(32, 3, 3, 3\)"):
    weights.convert("torch", str(tmp_path / "mobilenet.pth"), "tv_efficientnetv2_s")


def test_files_without_the_classifier_convert_for_the_aggregation_head(tmp_path):
  variables = _random_variables("efficientnet_lite0")
  state = _state_dict("efficientnet_pytorch", "efficientnet_lite0", variables)
  headless = {k: v for k, v in state.items() if not k.startswith("_fc.")}
  torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in headless.items()},
             tmp_path / "notop.pth")
  with pytest.raises(WeightsError, match=r"missing key\(s\), first _fc\.weight"):
    weights.convert("torch", str(tmp_path / "notop.pth"), "efficientnet_lite0")
  got = flatten(weights.convert("torch", str(tmp_path / "notop.pth"), "efficientnet_lite0",
                                classifier=False))
  assert got.keys() == {k for k in variables if not k.startswith("params/classifier/")}
