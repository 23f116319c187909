"""PyTorch state-dict layouts (timm, torchvision, EfficientNet-PyTorch) and bad weight files.

No timm or torchvision checkpoint can be downloaded here, so each layout is checked against key
names and shapes of the published checkpoints, then round-tripped through `.pth` and
`.safetensors` files: state dict -> our variables must give back exactly what was written.
A round trip cannot catch a mapping that swaps two same-shaped tensors, so a hand-written table
of published keys -> our variables is checked too.
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


# Written by hand from each library's module names and our parameter tree (not from
# `pytorch.pairs`): published key -> (our variable, how the tensor is laid out there).
# "conv": OIHW -> HWIO. "dw": PyTorch's depthwise (C, 1, k, k) -> our DepthwiseConv kernel
# (k, k, 1, C). "linear": (out, in) -> (in, out). "vector": unchanged (biases, batch norm).
# Flat block indices: EfficientNetV2-S stages hold 2, 4, 4, 6, 9, 15 blocks, so the first block
# of the fourth stage (the first MBConv, with squeeze-excite) is blocks_10 and the last is
# blocks_39; EfficientNet-B0's blocks are numbered 0..15 in every layout.
HAND_MAPPINGS = [
    ("timm", "efficientnetv2_s", {
        "conv_stem.weight": ("params/stem_conv/kernel", "conv"),
        "bn1.weight": ("params/stem_bn/scale", "vector"),
        "blocks.0.0.conv.weight": ("params/blocks_0/conv/kernel", "conv"),
        "blocks.1.0.conv_exp.weight": ("params/blocks_2/expand_conv/kernel", "conv"),
        "blocks.3.0.conv_pw.weight": ("params/blocks_10/expand_conv/kernel", "conv"),
        "blocks.3.0.conv_dw.weight": ("params/blocks_10/dw_conv/kernel", "dw"),
        "blocks.3.0.bn2.weight": ("params/blocks_10/dw_bn/scale", "vector"),
        "blocks.3.0.bn2.bias": ("params/blocks_10/dw_bn/bias", "vector"),
        "blocks.3.0.bn2.running_mean": ("batch_stats/blocks_10/dw_bn/mean", "vector"),
        "blocks.3.0.bn2.running_var": ("batch_stats/blocks_10/dw_bn/var", "vector"),
        "blocks.3.0.se.conv_reduce.weight": ("params/blocks_10/se/reduce/kernel", "conv"),
        "blocks.3.0.se.conv_reduce.bias": ("params/blocks_10/se/reduce/bias", "vector"),
        "blocks.3.0.se.conv_expand.weight": ("params/blocks_10/se/expand/kernel", "conv"),
        "blocks.3.0.se.conv_expand.bias": ("params/blocks_10/se/expand/bias", "vector"),
        "blocks.3.0.conv_pwl.weight": ("params/blocks_10/project_conv/kernel", "conv"),
        "blocks.3.0.bn3.running_var": ("batch_stats/blocks_10/project_bn/var", "vector"),
        "blocks.5.14.conv_pwl.weight": ("params/blocks_39/project_conv/kernel", "conv"),
        "conv_head.weight": ("params/head_conv/kernel", "conv"),
        "bn2.running_mean": ("batch_stats/head_bn/mean", "vector"),
        "classifier.weight": ("params/classifier/kernel", "linear"),
        "classifier.bias": ("params/classifier/bias", "vector"),
    }),
    ("torchvision_efficientnet", "tv_efficientnetv2_s", {
        "features.0.0.weight": ("params/stem_conv/kernel", "conv"),
        "features.0.1.weight": ("params/stem_bn/scale", "vector"),
        "features.1.0.block.0.0.weight": ("params/blocks_0/conv/kernel", "conv"),
        "features.2.0.block.0.0.weight": ("params/blocks_2/expand_conv/kernel", "conv"),
        "features.2.0.block.1.0.weight": ("params/blocks_2/project_conv/kernel", "conv"),
        "features.4.0.block.0.0.weight": ("params/blocks_10/expand_conv/kernel", "conv"),
        "features.4.0.block.1.0.weight": ("params/blocks_10/dw_conv/kernel", "dw"),
        "features.4.0.block.1.1.weight": ("params/blocks_10/dw_bn/scale", "vector"),
        "features.4.0.block.1.1.bias": ("params/blocks_10/dw_bn/bias", "vector"),
        "features.4.0.block.1.1.running_mean": ("batch_stats/blocks_10/dw_bn/mean", "vector"),
        "features.4.0.block.1.1.running_var": ("batch_stats/blocks_10/dw_bn/var", "vector"),
        "features.4.0.block.2.fc1.weight": ("params/blocks_10/se/reduce/kernel", "conv"),
        "features.4.0.block.2.fc1.bias": ("params/blocks_10/se/reduce/bias", "vector"),
        "features.4.0.block.2.fc2.weight": ("params/blocks_10/se/expand/kernel", "conv"),
        "features.4.0.block.2.fc2.bias": ("params/blocks_10/se/expand/bias", "vector"),
        "features.4.0.block.3.0.weight": ("params/blocks_10/project_conv/kernel", "conv"),
        "features.4.0.block.3.1.running_var": ("batch_stats/blocks_10/project_bn/var", "vector"),
        "features.6.14.block.3.0.weight": ("params/blocks_39/project_conv/kernel", "conv"),
        "features.7.0.weight": ("params/head_conv/kernel", "conv"),
        "features.7.1.running_mean": ("batch_stats/head_bn/mean", "vector"),
        "classifier.1.weight": ("params/classifier/kernel", "linear"),
        "classifier.1.bias": ("params/classifier/bias", "vector"),
    }),
    ("efficientnet_pytorch", "efficientnet_b0", {
        "_conv_stem.weight": ("params/stem_conv/kernel", "conv"),
        "_bn0.weight": ("params/stem_bn/scale", "vector"),
        "_blocks.0._depthwise_conv.weight": ("params/blocks_0/dw_conv/kernel", "dw"),
        "_blocks.0._bn1.weight": ("params/blocks_0/dw_bn/scale", "vector"),
        "_blocks.0._bn1.bias": ("params/blocks_0/dw_bn/bias", "vector"),
        "_blocks.0._bn1.running_mean": ("batch_stats/blocks_0/dw_bn/mean", "vector"),
        "_blocks.0._bn1.running_var": ("batch_stats/blocks_0/dw_bn/var", "vector"),
        "_blocks.0._se_reduce.weight": ("params/blocks_0/se/reduce/kernel", "conv"),
        "_blocks.0._se_reduce.bias": ("params/blocks_0/se/reduce/bias", "vector"),
        "_blocks.0._se_expand.weight": ("params/blocks_0/se/expand/kernel", "conv"),
        "_blocks.0._se_expand.bias": ("params/blocks_0/se/expand/bias", "vector"),
        "_blocks.0._project_conv.weight": ("params/blocks_0/project_conv/kernel", "conv"),
        "_blocks.0._bn2.running_var": ("batch_stats/blocks_0/project_bn/var", "vector"),
        "_blocks.1._expand_conv.weight": ("params/blocks_1/expand_conv/kernel", "conv"),
        "_blocks.1._bn0.running_mean": ("batch_stats/blocks_1/expand_bn/mean", "vector"),
        "_blocks.15._project_conv.weight": ("params/blocks_15/project_conv/kernel", "conv"),
        "_conv_head.weight": ("params/head_conv/kernel", "conv"),
        "_bn1.bias": ("params/head_bn/bias", "vector"),
        "_fc.weight": ("params/classifier/kernel", "linear"),
        "_fc.bias": ("params/classifier/bias", "vector"),
    }),
]

# Written index by index: ours[h, w, i, o] = torch[o, i, h, w]; a depthwise (C, 1, k, k) tensor
# is the same rule with i = 0 and o = the channel; a linear layer's ours[i, o] = torch[o, i].
EXPECTED_LAYOUT = {"conv": lambda t: np.einsum("oihw->hwio", t),
                   "dw": lambda t: np.einsum("cihw->hwic", t),
                   "linear": lambda t: np.einsum("oi->io", t),
                   "vector": lambda t: t}


def _distinct_random_state(layout, name, seed=1):
  """Every key of the layout, each with its own random values (no two tensors alike)."""
  shapes = {k: v.shape for k, v in _state_dict(layout, name, _random_variables(name)).items()}
  rng = np.random.default_rng(seed)
  return {key: rng.normal(size=shape).astype(np.float32) for key, shape in shapes.items()}


@pytest.mark.parametrize("layout, name, mapping", HAND_MAPPINGS)
def test_published_keys_land_in_the_hand_listed_variables(layout, name, mapping, tmp_path):
  state = _distinct_random_state(layout, name)
  assert pytorch.layout(state) == layout
  for key, (_, kind) in mapping.items():
    assert key in state, f"{layout}: the mapping has no {key}"
    if kind == "dw":
      assert state[key].shape[1] == 1, f"{key} is not a depthwise (C, 1, k, k) tensor"
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "w.pth")
  got = flatten(weights.convert("torch", str(tmp_path / "w.pth"), name))
  for key, (path, kind) in mapping.items():
    assert path in got, f"{layout}: no variable {path}"
    np.testing.assert_array_equal(got[path], EXPECTED_LAYOUT[kind](state[key]),
                                  err_msg=f"{layout}: {key} -> {path} ({kind})")
  # The check can tell same-shaped tensors apart (batch-norm scale/bias, mean/var, ...).
  listed = [state[key].tobytes() for key in mapping]
  assert len(set(listed)) == len(listed)


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
