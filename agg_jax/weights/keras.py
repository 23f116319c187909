"""Keras weight files (EfficientNet, EfficientNetV2, Xception) -> our Flax variables.

Reads Keras 3 `.weights.h5`, `.keras` (a zip holding `model.weights.h5`) and the legacy `.h5`
format of the official ImageNet weights. Keras 3 files name layers by class and creation order
(`conv2d_17`, `batch_normalization_5`); legacy files by layer name (`block2a_expand_conv`). A
*plan* lists the reference model's weighted layers in creation order with both names, so both
formats map through the same table.
"""

import dataclasses
import io
import re
import zipfile
from collections import Counter
from collections.abc import Mapping

import numpy as np

from agg_jax.models.efficientnet import IMAGENET_MEAN, IMAGENET_STD, EfficientNet
from agg_jax.models.xception import ENTRY, EXIT, MIDDLE
from agg_jax.weights.assign import Pair, WeightsError

# Variable order inside each Keras layer class (Keras 3 files store them as vars/0, vars/1, ...).
VAR_NAMES = {
    "conv2d": ("kernel", "bias"),
    "depthwise_conv2d": ("kernel", "bias"),
    "separable_conv2d": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
    "normalization": ("mean", "variance", "count"),
}


@dataclasses.dataclass(frozen=True)
class Layer:
  """A weighted Keras layer: its name, class (snake case) and our module path (None: checked)."""
  name: str
  cls: str
  ours: str | None


def read(path: str) -> tuple[dict[str, np.ndarray], str]:
  """Arrays of a Keras weight file by `layer/variable`, and the naming ("keras3" or "legacy")."""
  import h5py  # only Keras files need it (the "import" extra)
  try:
    if zipfile.is_zipfile(path):
      with zipfile.ZipFile(path) as archive:
        if "model.weights.h5" not in archive.namelist():
          raise WeightsError(f"{path}: a .keras archive without model.weights.h5")
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as f:
          return _read_keras3(f), "keras3"
    with h5py.File(path, "r") as f:
      if "layers" in f:
        return _read_keras3(f), "keras3"
      root = f["model_weights"] if "model_weights" in f else f
      if "layer_names" not in root.attrs:
        raise WeightsError(f"{path}: neither a Keras 3 weights file nor a legacy Keras .h5")
      return _read_legacy(root), "legacy"
  except (OSError, KeyError, zipfile.BadZipFile) as error:
    raise WeightsError(f"{path}: unreadable Keras weights file (truncated?): {error}") from error


def _read_keras3(f) -> dict[str, np.ndarray]:
  arrays = {}
  for name, group in f["layers"].items():
    if "vars" not in group or not len(group["vars"]):
      continue
    names = VAR_NAMES.get(re.sub(r"_\d+$", "", name), ())
    for i in range(len(group["vars"])):
      var = names[i] if i < len(names) else str(i)
      arrays[f"{name}/{var}"] = np.asarray(group["vars"][str(i)])
  return arrays


def _read_legacy(root) -> dict[str, np.ndarray]:
  arrays = {}
  for layer in (n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]):
    weight_names = [n.decode() if isinstance(n, bytes) else n
                    for n in root[layer].attrs["weight_names"]]
    short = [n.split("/")[-1].split(":")[0] for n in weight_names]
    if short == ["depthwise_kernel"]:  # tf.keras DepthwiseConv2D; Keras 3 calls it "kernel"
      short = ["kernel"]
    for full, var in zip(weight_names, short):
      arrays[f"{layer}/{var}"] = np.asarray(root[layer][full])
  return arrays


def efficientnet_layers(model: EfficientNet, family: str) -> list[Layer]:
  """Keras' weighted layers of an EfficientNet ("v1") or EfficientNetV2 ("v2"), in order.

  The order is Keras' `model.layers` order (a topological sort of the graph), which numbers the
  layers of a Keras 3 file.
  """
  bn = "batch_normalization"
  out = [Layer("normalization", "normalization", None)] if family == "v1" else []
  out += [Layer("stem_conv", "conv2d", "stem_conv"), Layer("stem_bn", bn, "stem_bn")]
  index = 0
  for s, stage in enumerate(model.stages()):
    for j in range(stage.repeats):
      k, ours = f"block{s + 1}{chr(97 + j)}_", f"blocks_{index}"
      se = [Layer(k + "se_reduce", "conv2d", ours + "/se/reduce"),
            Layer(k + "se_expand", "conv2d", ours + "/se/expand")] if stage.se_ratio else []
      project = [Layer(k + "project_conv", "conv2d", ours + "/project_conv"),
                 Layer(k + "project_bn", bn, ours + "/project_bn")]
      expand = [Layer(k + "expand_conv", "conv2d", ours + "/expand_conv"),
                Layer(k + "expand_bn", bn, ours + "/expand_bn")]
      if stage.kind == "cn":
        out += [Layer(k + "project_conv", "conv2d", ours + "/conv"),
                Layer(k + "project_bn", bn, ours + "/bn")]
      elif stage.kind == "er":
        out += expand + se + project
      else:
        dw = [Layer(k + ("dwconv2" if family == "v2" else "dwconv"), "depthwise_conv2d",
                    ours + "/dw_conv"), Layer(k + "bn", bn, ours + "/dw_bn")]
        out += (expand if stage.kind == "ir" and stage.expand != 1 else []) + dw + se + project
      index += 1
  return out + [Layer("top_conv", "conv2d", "head_conv"), Layer("top_bn", bn, "head_bn"),
                Layer("predictions", "dense", "classifier")]


def xception_layers() -> list[Layer]:
  """Keras' weighted layers of `keras.applications.Xception`, in `model.layers` order."""
  bn = "batch_normalization"
  out = [Layer("block1_conv1", "conv2d", "stem1_conv"), Layer("block1_conv1_bn", bn, "stem1_bn"),
         Layer("block1_conv2", "conv2d", "stem2_conv"), Layer("block1_conv2_bn", bn, "stem2_bn")]
  shortcuts = 0
  for index, (features, stride) in enumerate(ENTRY + MIDDLE + EXIT, start=1):
    ours, k = f"blocks_{index}", f"block{index + 1}_"
    for i in range(len(features)):
      out += [Layer(f"{k}sepconv{i + 1}", "separable_conv2d", f"{ours}/sep{i + 1}"),
              Layer(f"{k}sepconv{i + 1}_bn", bn, f"{ours}/bn{i + 1}")]
    if stride != 1:  # unnamed in Keras; sorted after the main branch in `model.layers`
      suffix = f"_{shortcuts}" if shortcuts else ""
      out += [Layer("conv2d" + suffix, "conv2d", ours + "/shortcut"),
              Layer(bn + suffix, bn, ours + "/shortcut_bn")]
      shortcuts += 1
  last = len(ENTRY + MIDDLE + EXIT) + 2
  for i in range(2):
    out += [Layer(f"block{last}_sepconv{i + 1}", "separable_conv2d", f"exit_sep{i + 1}"),
            Layer(f"block{last}_sepconv{i + 1}_bn", bn, f"exit_bn{i + 1}")]
  return out + [Layer("predictions", "dense", "classifier")]


def _depthwise(kernel: np.ndarray) -> np.ndarray:
  return kernel.transpose(0, 1, 3, 2)  # Keras (k, k, C, 1) -> Flax grouped (k, k, 1, C)


def pairs(layers: list[Layer], naming: str, target: Mapping[str, tuple[int, ...]]) -> list[Pair]:
  """Source key -> our variable for every layer; `naming` is what `read` returned."""
  out, counts = [], Counter()
  for layer in layers:
    key = layer.cls if not counts[layer.cls] else f"{layer.cls}_{counts[layer.cls]}"
    counts[layer.cls] += 1
    key = key if naming == "keras3" else layer.name
    if layer.ours is None:
      continue
    p = f"params/{layer.ours}"
    if layer.cls == "batch_normalization":
      out += [Pair(f"{key}/gamma", f"{p}/scale", label=layer.name),
              Pair(f"{key}/beta", f"{p}/bias", label=layer.name),
              Pair(f"{key}/moving_mean", f"batch_stats/{layer.ours}/mean", label=layer.name),
              Pair(f"{key}/moving_variance", f"batch_stats/{layer.ours}/var", label=layer.name)]
    elif layer.cls == "depthwise_conv2d":
      out.append(Pair(f"{key}/kernel", f"{p}/kernel", _depthwise, label=layer.name))
    elif layer.cls == "separable_conv2d":
      out += [Pair(f"{key}/depthwise_kernel", f"{p}/depthwise/kernel", _depthwise,
                   label=layer.name),
              Pair(f"{key}/pointwise_kernel", f"{p}/pointwise/kernel", label=layer.name)]
    else:  # conv2d, dense: the same layouts as Flax
      out.append(Pair(f"{key}/kernel", f"{p}/kernel", label=layer.name))
      if f"{p}/bias" in target:
        out.append(Pair(f"{key}/bias", f"{p}/bias", label=layer.name))
  return out


NORMALIZATION = re.compile(r"^normalization(_\d+)?/")  # legacy files number repeated names


def check_normalization(arrays: Mapping[str, np.ndarray], what: str) -> None:
  """Keras EfficientNet (v1) keeps its input normalisation as weights: it must be ImageNet's.

  The official file stores the standard deviations as `variance` (Keras then rescales by
  1/sqrt(std)); a correctly adapted layer stores their squares. Both mean our "imagenet".
  """
  found = {key.split("/")[1]: value for key, value in arrays.items()
           if NORMALIZATION.match(key)}
  mean, variance = found.get("mean"), found.get("variance")
  if mean is None or variance is None:
    raise WeightsError(f"{what}: no normalization/mean and normalization/variance (an "
                       "EfficientNet v1 file has them)")
  std = np.asarray(IMAGENET_STD)
  if not (np.allclose(mean, IMAGENET_MEAN, atol=1e-3) and
          (np.allclose(variance, std, atol=1e-3) or np.allclose(variance, std ** 2, atol=1e-3))):
    raise WeightsError(f"{what}: normalization/mean {mean} and variance {variance} are not "
                       "ImageNet's; the model normalises with input_norm='imagenet'")


def keras_layers(name: str, model) -> tuple[list[Layer], str]:
  """The layer plan of a registered model and its Keras family; error if Keras has none."""
  families = {"efficientnetv2_s": "v2", "efficientnetv2_b0": "v2", "efficientnet_b0": "v1",
              "xception": "xception"}
  if name not in families:
    raise WeightsError(f"no Keras mapping for model {name!r}; Keras files import into "
                       f"{', '.join(sorted(families))}")
  family = families[name]
  return (xception_layers() if family == "xception" else
          efficientnet_layers(model, family)), family
