"""A trained detector as exported by `--mode=export`, loaded with jax and numpy alone.

An export folder (export.py writes it) holds

  model.json              format and version, the model config, the input contract (side,
                          uint8 RGB in [0, 255], the face alignment, the central crop read and
                          how faces are resized), the decision threshold and how it was chosen,
                          the aggregated blocks and their ranking, the CAM layers, the platforms
  variables.safetensors   the best checkpoint's variables (no optimizer state), keys
                          "params/backbone/stem_conv/kernel", ...
  detector.jaxexport      serialized `jax.export` of (variables, images (b, S, S, 3) uint8) ->
                          probability of fake (b,), any batch size b
  cam.jaxexport           (variables, images) -> Grad-CAM maps (b, layers, S, S) in [0, 1] of
                          the CAM layers

Nothing in it is a pickle. This module imports no training code (no flax, no optax, no model
definitions): a scoring service needs jax, numpy and safetensors, and `agg_jax.preprocess` for
faces. The folder may be local or on object storage (`gs://...`, read through etils.epath).
"""

import json
import os

import jax
import numpy as np
from etils import epath
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors

from agg_jax import face_input, fileio

FORMAT = "agg_jax-export"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
VARIABLES = "variables.safetensors"
DETECTOR = "detector.jaxexport"
CAM = "cam.jaxexport"


class ExportError(ValueError):
  """An export folder that is missing, incomplete, or of another format version."""


def nest(flat: dict[str, np.ndarray]) -> dict:
  """{"a/b/c": x} -> {"a": {"b": {"c": x}}}."""
  tree = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
  """The inverse of `nest`."""
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}/").items()}
  return {prefix[:-1]: np.asarray(tree)}


class Detector:
  """Scores aligned faces with an exported model; `probabilities` and `cam` take uint8 RGB
  images of the model's side, `prepare` resizes aligned faces to it as training did."""

  def __init__(self, folder: str | os.PathLike):
    self.folder = fileio.path(folder)  # a local folder or gs://...
    self.info = read_model_json(self.folder)
    try:
      self.variables = nest(load_safetensors((self.folder / VARIABLES).read_bytes()))
    except (OSError, SafetensorError) as e:
      raise ExportError(f"{self.folder / VARIABLES}: cannot read the variables ({e})") from None
    detector = _deserialize(self.folder / DETECTOR)
    self._detector = jax.jit(detector.call)
    cam_path = self.folder / CAM
    self._cam = _deserialize(cam_path) if cam_path.is_file() else None

  @property
  def image_size(self) -> int:
    return int(self.info["input"]["image_size"])

  @property
  def threshold(self) -> float:
    return float(self.info["threshold"]["value"])

  @property
  def alignment(self) -> dict:
    """The face alignment of the training data (`preprocess.aligner.Settings` fields)."""
    return dict(self.info["input"]["alignment"])

  @property
  def cam_layers(self) -> list[str]:
    return list(self.info.get("cam_layers", [])) if self._cam is not None else []

  @property
  def crop(self) -> float:
    """The central fraction of the aligned face's side the model reads (1.0 before it existed)."""
    return float(self.info["input"].get("crop", 1.0))

  def prepare(self, faces: np.ndarray) -> np.ndarray:
    """Aligned faces (B, A, A, 3) uint8 at the alignment's side -> the model's input, as the
    training data was read (face_input.model_input: the central crop, OpenCV INTER_AREA)."""
    faces = np.asarray(faces, np.uint8)
    return np.stack([face_input.model_input(face, self.image_size, self.crop) for face in faces])

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    """Probability of fake (B,) for uint8 images (B, S, S, 3)."""
    images = self._check(images)
    return np.asarray(self._detector(self.variables, images), np.float32)

  def cam(self, images: np.ndarray) -> np.ndarray:
    """Grad-CAM maps (B, len(cam_layers), S, S) in [0, 1]; ExportError without a CAM module."""
    if self._cam is None:
      raise ExportError(f"{self.folder}: exported without {CAM}")
    return np.asarray(self._cam.call(self.variables, self._check(images)), np.float32)

  def _check(self, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    side = self.image_size
    if images.ndim != 4 or images.shape[1:] != (side, side, 3) or images.dtype != np.uint8:
      raise ValueError(f"the exported model takes uint8 images (B, {side}, {side}, 3), got "
                       f"{images.dtype} {images.shape}")
    return images


def read_model_json(folder: str | os.PathLike) -> dict:
  """model.json of an export folder, its format and version checked."""
  path = fileio.path(folder) / MODEL_JSON
  if not path.is_file():
    raise ExportError(f"{folder}: not an export folder ({MODEL_JSON} is missing); make one with "
                      "`python -m agg_jax.main --workdir=RUN --mode=export`")
  try:
    info = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ExportError(f"{path}: unreadable ({e})") from None
  if not isinstance(info, dict) or info.get("format") != FORMAT:
    raise ExportError(f"{path}: not an agg_jax export")
  if info.get("format_version") != FORMAT_VERSION:
    raise ExportError(f"{path}: format version {info.get('format_version')!r}; this agg_jax "
                      f"reads version {FORMAT_VERSION}: export the run again")
  return info


def _deserialize(path: epath.Path) -> "jax.export.Exported":
  try:
    return jax.export.deserialize(bytearray(path.read_bytes()))
  except FileNotFoundError:
    raise ExportError(f"{path}: missing") from None
  except Exception as e:  # pylint: disable=broad-except  # a corrupt or foreign file
    raise ExportError(f"{path}: not a serialized jax.export module ({e})") from None


def load(folder: str | os.PathLike) -> Detector:
  """The detector exported to `folder`."""
  return Detector(folder)
