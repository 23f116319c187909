"""EfficientNet-family backbones built from block strings, every block output sown.

One grammar builds the whole family (timm's notation): a stage is
`{kind}_r{repeats}_k{kernel}_s{stride}[_e{expand}]_c{channels}[_se{ratio}][_skip|_noskip]`,
stages are joined by `|`. Kinds:

  cn  conv k x k + BN + activation (EfficientNetV2's fused-MBConv with expansion 1)
  er  "edge residual", fused-MBConv: conv k x k expand + BN + act, [SE], conv 1x1 project + BN
  ir  inverted residual, MBConv: conv 1x1 expand + BN + act, depthwise k x k + BN + act, [SE],
      conv 1x1 project + BN
  ds  depthwise separable: depthwise k x k + BN + act, [SE], conv 1x1 project + BN

The residual connection (with stochastic depth) is used when stride is 1 and the channel count
is unchanged; `cn` uses it only when marked `_skip` and `noskip` turns it off for the others.

EfficientNetV2-S as published (Tan & Le 2021; the paper's backbone, section III-B) is
`ARCHS["efficientnetv2_s"]`: stem 24, 40 blocks (2+4+4+6+9+15), head 1280. Each block's output is
sown into the `intermediates` collection as `block00`, `block01`, ... in forward order and also
returned, so the aggregation head (head.py) consumes exactly those tensors. Block parameters live
under `blocks_0`, `blocks_1`, ... (Flax's naming of a list of submodules).
"""

import dataclasses
import math
import re
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from agg_jax.models import layers

Padding = Literal["same", "symmetric"]

# Input normalisations: the model takes uint8 or float pixels in [0, 255] (docs/architecture.md).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_pixels(images: jax.Array, mode: str) -> jax.Array:
  """Maps [0, 255] pixels to the range a backbone was trained on, in float32 (the backbones
  cast the result to their computation dtype)."""
  x = images.astype(jnp.float32)
  if mode == "v2":  # Keras EfficientNetV2-S/M/L: x / 128 - 1.
    return x / 128.0 - 1.0
  if mode == "inception":  # [-1, 1]
    return x / 127.5 - 1.0
  if mode == "imagenet":
    return (x / 255.0 - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
  if mode == "lite":  # TF EfficientNet-Lite: (x - 127) / 128.
    return (x - 127.0) / 128.0
  if mode == "none":
    return x
  raise ValueError(f"unknown input normalisation {mode!r}: use v2, inception, imagenet, lite or "
                   "none")


def conv_padding(mode: Padding, kernel: int):
  """Flax `padding` for a convolution: TF "SAME" or PyTorch's symmetric k // 2."""
  return "SAME" if mode == "same" else [(kernel // 2, kernel // 2)] * 2


def conv(features: int, kernel: int, stride: int, padding: Padding, dtype: Any,
         name: str) -> nn.Module:
  """A convolution without bias: 1x1 ones of stride 1 as a matmul (layers.PointwiseConv, the
  same parameter), the others as nn.Conv."""
  if kernel == 1 and stride == 1:
    return layers.PointwiseConv(features, dtype=dtype, name=name)
  return nn.Conv(features, (kernel, kernel), (stride, stride),
                 padding=conv_padding(padding, kernel), use_bias=False, dtype=dtype, name=name)


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """One stage of a block string: `repeats` blocks of one kind."""
  kind: str
  repeats: int
  kernel: int
  stride: int
  expand: float
  channels: int
  se_ratio: float = 0.0
  skip: bool | None = None  # None: residual whenever shapes allow (cn: never).


_STAGE_RE = re.compile(r"^(cn|er|ir|ds)((?:_[a-z]+[0-9.]*)+)$")


def parse_stage(text: str) -> StageSpec:
  """Parses one stage string, e.g. `ir_r6_k3_s2_e4_c128_se0.25`."""
  text = text.strip()
  match = _STAGE_RE.match(text)
  if not match:
    raise ValueError(f"bad block string {text!r}: expected e.g. 'ir_r6_k3_s2_e4_c128_se0.25'")
  fields: dict[str, Any] = {"kind": match.group(1), "expand": 1.0}
  for token in match.group(2).strip("_").split("_"):
    if token in ("skip", "noskip"):
      fields["skip"] = token == "skip"
      continue
    key, value = re.match(r"^([a-z]+)([0-9.]+)$", token).groups()
    names = {"r": "repeats", "k": "kernel", "s": "stride", "e": "expand", "c": "channels",
             "se": "se_ratio"}
    if key not in names:
      raise ValueError(f"bad block string {text!r}: unknown option {token!r}")
    fields[names[key]] = float(value) if key in ("e", "se") else int(value)
  missing = {"repeats", "kernel", "stride", "channels"} - fields.keys()
  if missing:
    raise ValueError(f"bad block string {text!r}: missing {sorted(missing)}")
  return StageSpec(**fields)


def round_channels(channels: float, multiplier: float, divisor: int = 8) -> int:
  """Scales a channel count and rounds it to a multiple of `divisor` (never down by >10%)."""
  if multiplier == 1.0:
    return int(channels)
  scaled = channels * multiplier
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def parse_arch(arch: str, width: float = 1.0, depth: float = 1.0) -> list[StageSpec]:
  """Parses a `|`-joined block string, applying width and depth multipliers."""
  stages = [parse_stage(s) for s in arch.split("|") if s.strip()]
  return [dataclasses.replace(s, channels=round_channels(s.channels, width),
                              repeats=int(math.ceil(s.repeats * depth))) for s in stages]


class Block(nn.Module):
  """One block of the family (kinds cn, er, ir, ds; see the module docstring)."""
  kind: str
  features: int
  kernel: int
  stride: int
  expand: float
  se_ratio: float
  residual: bool
  drop_path: float
  activation: str
  padding: Padding
  bn_momentum: float
  bn_epsilon: float
  depthwise: layers.DepthwiseImpl
  dtype: Any

  def _conv(self, features: int, kernel: int, stride: int, name: str) -> nn.Module:
    return conv(features, kernel, stride, self.padding, self.dtype, name)

  def _bn(self, train: bool, name: str, activation: str | None = None) -> layers.BatchNorm:
    """Batch norm followed by the block's activation (or none: `activation="linear"`)."""
    return layers.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                            epsilon=self.bn_epsilon, activation=activation or self.activation,
                            dtype=self.dtype, name=name)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    inputs = x
    in_features = x.shape[-1]
    hidden = int(round(in_features * self.expand))
    if self.kind == "cn":
      x = self._bn(train, "bn")(self._conv(self.features, self.kernel, self.stride, "conv")(x))
    else:
      if self.kind == "er":
        x = self._bn(train, "expand_bn")(
            self._conv(hidden, self.kernel, self.stride, "expand_conv")(x))
      else:
        if self.kind == "ir" and self.expand != 1:
          x = self._bn(train, "expand_bn")(self._conv(hidden, 1, 1, "expand_conv")(x))
        x = layers.DepthwiseConv(self.kernel, self.stride, self.depthwise, self.padding,
                                 self.dtype, name="dw_conv")(x)
        x = self._bn(train, "dw_bn")(x)
      if self.se_ratio > 0:
        reduced = max(1, int(in_features * self.se_ratio))
        x = layers.SqueezeExcite(reduced, layers.ACTIVATIONS[self.activation][0],
                                 dtype=self.dtype, name="se")(x)
      x = self._bn(train, "project_bn", "linear")(
          self._conv(self.features, 1, 1, "project_conv")(x))
    if self.residual:
      x = layers.DropPath(self.drop_path)(x, deterministic=not train) + inputs
    return x


class EfficientNet(nn.Module):
  """An EfficientNet-family backbone; see the module docstring for the block-string grammar.

  Returns `(logits, endpoints)`: ImageNet logits (None without a top) and the dict of block
  outputs `block00..blockNN` in forward order, the same tensors sown into `intermediates`.
  """
  arch: str
  stem_features: int = 24
  head_features: int | None = 1280
  num_classes: int = 1000
  include_top: bool = True
  width: float = 1.0
  depth: float = 1.0
  activation: str = "silu"
  input_norm: str = "v2"
  padding: Padding = "same"
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-3
  drop_path_rate: float = 0.2
  dropout_rate: float = 0.2
  depthwise: layers.DepthwiseImpl = "shifted"
  # The computation dtype; parameters, batch-norm statistics and the logits stay float32.
  dtype: Any = jnp.float32
  # Without a top: run only the first `num_blocks` blocks (a trimmed model needs no deeper ones).
  num_blocks: int | None = None
  # Block outputs pass through `Module.perturb`, so `jax.grad` reaches them (Grad-CAM).
  perturb_endpoints: bool = False
  # What the backward pass recomputes instead of keeping (layers.REMAT_POLICIES): "none",
  # "conv" (each block keeps its convolutions' outputs and recomputes the rest) or "block".
  remat: str = "none"

  def stages(self) -> list[StageSpec]:
    return parse_arch(self.arch, self.width, self.depth)

  def block_stages(self) -> list[int]:
    """Stage index of every block, in forward order."""
    return [i for i, s in enumerate(self.stages()) for _ in range(s.repeats)]

  def block_names(self) -> list[str]:
    return [f"block{i:02d}" for i in range(len(self.block_stages()))]

  def _conv_bn_act(self, x, features, kernel, stride, train, name):
    x = conv(features, kernel, stride, self.padding, self.dtype, f"{name}_conv")(x)
    return layers.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                            epsilon=self.bn_epsilon, activation=self.activation,
                            dtype=self.dtype, name=f"{name}_bn")(x)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    x = normalize_pixels(images, self.input_norm).astype(self.dtype)
    x = self._conv_bn_act(x, round_channels(self.stem_features, self.width), 3, 2, train, "stem")
    stages = self.stages()
    total = sum(s.repeats for s in stages)
    endpoints = {}
    last = layers.check_num_blocks(self.num_blocks, total, self.include_top)
    index = 0
    block = layers.remat_block(Block, self.remat)
    for stage in stages:
      for repeat in range(stage.repeats):
        stride = stage.stride if repeat == 0 else 1
        same_shape = stride == 1 and x.shape[-1] == stage.channels
        residual = same_shape and (stage.skip is True or (stage.skip is None and stage.kind != "cn"))
        name = f"block{index:02d}"
        x = block(stage.kind, stage.channels, stage.kernel, stride, stage.expand, stage.se_ratio,
                  residual, self.drop_path_rate * index / total, self.activation, self.padding,
                  self.bn_momentum, self.bn_epsilon, self.depthwise, self.dtype,
                  name=f"blocks_{index}")(x, train)
        x = layers.emit_endpoint(self, endpoints, name, x)
        index += 1
        if index == last:
          return None, endpoints
    if not self.include_top:
      return None, endpoints
    if self.head_features:
      x = self._conv_bn_act(x, round_channels(self.head_features, self.width), 1, 1, train, "head")
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
    return logits.astype(jnp.float32), endpoints


# Block strings of the family. Other sizes are width/depth multipliers of these.
ARCHS = {
    # Tan & Le 2021, Table 4; Keras `EfficientNetV2S`; timm `tf_efficientnetv2_s`.
    "efficientnetv2_s": ("cn_r2_k3_s1_e1_c24_skip | er_r4_k3_s2_e4_c48 | er_r4_k3_s2_e4_c64 | "
                         "ir_r6_k3_s2_e4_c128_se0.25 | ir_r9_k3_s1_e6_c160_se0.25 | "
                         "ir_r15_k3_s2_e6_c256_se0.25"),
    # EfficientNetV2-B0 (the base of B0-B3).
    "efficientnetv2_b0": ("cn_r1_k3_s1_e1_c16_skip | er_r2_k3_s2_e4_c32 | er_r2_k3_s2_e4_c48 | "
                          "ir_r3_k3_s2_e4_c96_se0.25 | ir_r5_k3_s1_e6_c112_se0.25 | "
                          "ir_r8_k3_s2_e6_c192_se0.25"),
    # EfficientNet-B0 (Tan & Le 2019, Table 1); Keras `EfficientNetB0`.
    "efficientnet_b0": ("ds_r1_k3_s1_e1_c16_se0.25 | ir_r2_k3_s2_e6_c24_se0.25 | "
                        "ir_r2_k5_s2_e6_c40_se0.25 | ir_r3_k3_s2_e6_c80_se0.25 | "
                        "ir_r3_k5_s1_e6_c112_se0.25 | ir_r4_k5_s2_e6_c192_se0.25 | "
                        "ir_r1_k3_s1_e6_c320_se0.25"),
    # EfficientNet-Lite0: B0 without squeeze-excite, with ReLU6.
    "efficientnet_lite0": ("ds_r1_k3_s1_e1_c16 | ir_r2_k3_s2_e6_c24 | ir_r2_k5_s2_e6_c40 | "
                           "ir_r3_k3_s2_e6_c80 | ir_r3_k5_s1_e6_c112 | ir_r4_k5_s2_e6_c192 | "
                           "ir_r1_k3_s1_e6_c320"),
    # MobileNetV2 (Sandler et al. 2018, Table 2); torchvision `mobilenet_v2`.
    "mobilenetv2": ("ds_r1_k3_s1_e1_c16 | ir_r2_k3_s2_e6_c24 | ir_r3_k3_s2_e6_c32 | "
                    "ir_r4_k3_s2_e6_c64 | ir_r3_k3_s1_e6_c96 | ir_r3_k3_s2_e6_c160 | "
                    "ir_r1_k3_s1_e6_c320"),
}


def _builder(arch: str, **defaults):
  def build(**overrides) -> EfficientNet:
    return EfficientNet(arch=ARCHS[arch], **{**defaults, **overrides})
  return build


# The padding, input normalisation and batch-norm epsilon of each entry are those of the
# weights it imports (agg_jax/weights): TF-trained weights use TF "SAME" padding, PyTorch-trained
# ones symmetric padding.
BACKBONES = {
    "efficientnetv2_s": _builder("efficientnetv2_s"),
    "efficientnetv2_b0": _builder("efficientnetv2_b0", stem_features=32, input_norm="imagenet"),
    # torchvision's `efficientnet_v2_s`: the same network trained in PyTorch.
    "tv_efficientnetv2_s": _builder("efficientnetv2_s", padding="symmetric",
                                    input_norm="imagenet"),
    "efficientnet_b0": _builder("efficientnet_b0", stem_features=32, input_norm="imagenet"),
    "efficientnet_lite0": _builder("efficientnet_lite0", stem_features=32, activation="relu6",
                                   input_norm="lite"),
    "mobilenetv2": _builder("mobilenetv2", stem_features=32, activation="relu6",
                            input_norm="imagenet", padding="symmetric", bn_epsilon=1e-5),
    # Scaled-down variants for tests and the demo: the same stages, fewer and narrower blocks.
    # The 6 stages of EfficientNetV2-S with 7 blocks (1+1+1+1+1+2), quarter width: fast tests.
    "efficientnetv2_tiny": _builder("efficientnetv2_s", width=0.25, depth=0.1, head_features=256),
    # The 6 stages with 12 blocks (1+1+1+2+3+4, the depth multiplier rounded up), half width:
    # the demo.
    "efficientnetv2_mini": _builder("efficientnetv2_s", width=0.5, depth=0.25, head_features=640),
}
