"""Locate dlib's model files: the 68-point landmark model and the CNN (MMOD) face detector.

Searched in this order: the folder named by the environment variable ``AGG_JAX_DLIB_MODELS``;
the ``face-recognition-models`` package (``pip install face-recognition-models``); Debian's
``libdlib-data`` (``apt-get install libdlib-data``, files in ``/usr/share/dlib``). The package is
found without importing it (its ``__init__`` needs ``pkg_resources``).
"""

import importlib.util
import os
from pathlib import Path

LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
CNN_DETECTOR = "mmod_human_face_detector.dat"
ENV_VAR = "AGG_JAX_DLIB_MODELS"
DEBIAN_DIR = Path("/usr/share/dlib")


class ModelNotFoundError(FileNotFoundError):
  """A dlib model file is in none of the searched places."""


def search_dirs() -> list[Path]:
  """Folders searched for dlib model files, in order."""
  dirs = []
  if os.environ.get(ENV_VAR):
    dirs.append(Path(os.environ[ENV_VAR]))
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is not None and spec.submodule_search_locations:
    dirs.extend(Path(p) / "models" for p in spec.submodule_search_locations)
  dirs.append(DEBIAN_DIR)
  return dirs


def find_model(name: str) -> Path:
  """Path of the dlib model file ``name``; raises ModelNotFoundError saying how to get it."""
  dirs = search_dirs()
  for d in dirs:
    if (d / name).is_file():
      return d / name
  raise ModelNotFoundError(
      f"dlib model file {name} not found (searched: {', '.join(map(str, dirs))}). Install it "
      "with `pip install face-recognition-models==0.3.0` or `apt-get install libdlib-data`, "
      f"or point {ENV_VAR} at a folder that holds it.")
