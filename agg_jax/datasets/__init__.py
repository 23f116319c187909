"""Face datasets: the TFDS builders in the repository's ``datasets/`` folder, found by path.

  python -m agg_jax.datasets build NAME --manual_dir=DIR --data_dir=DIR [--config=CONFIG]
  python -m agg_jax.datasets list

``faces`` defines what every dataset stores and how its split names read; ``builder`` is the
base class of the builders. A builder is ``datasets/<name>/<name>_dataset_builder.py`` (the
layout ``tfds new`` makes), or any such folder named by path. Prepared datasets are read back
without the builder's code (``prepared``), by ``agg_jax.data.tfds_source``.
"""

import os
import shlex
from pathlib import Path

BUILDERS_DIR = Path(__file__).resolve().parents[2] / "datasets"
DEFAULT_DATA_DIR = "~/tensorflow_datasets"


class DatasetError(Exception):
  """A builder, manual folder or prepared dataset that cannot be used; the message says why."""


def list_builders() -> list[str]:
  """The builders in ``datasets/``."""
  if not BUILDERS_DIR.is_dir():
    return []
  return sorted(p.name for p in BUILDERS_DIR.iterdir()
                if (p / f"{p.name}_dataset_builder.py").is_file())


def builder_path(name: str) -> Path:
  """The builder module of ``name`` (a builder of ``datasets/`` or a builder folder's path)."""
  folder = Path(name).expanduser()
  if not (folder / f"{folder.name}_dataset_builder.py").is_file():
    folder = BUILDERS_DIR / name
  module = folder / f"{folder.name}_dataset_builder.py"
  if not module.is_file():
    raise DatasetError(f"no builder {name!r}: expected {module}; the builders are "
                       f"{', '.join(list_builders()) or 'none'} (in {BUILDERS_DIR})")
  return module


def builder_class(name: str):
  """The builder class of ``name``, imported from its folder as ``<name>.<name>_dataset_builder``
  (as ``tfds build`` imports it)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  module = builder_path(name)
  with tfds.core.utils.add_sys_path(module.parent.parent):
    return tfds.core.community.builder_cls_from_module(f"{module.parent.name}.{module.stem}")


def build_command(name: str, config: str | None = None, data_dir: str | None = None) -> str:
  """The command that prepares ``name`` (its manual folder left to fill in)."""
  words = ["python", "-m", "agg_jax.datasets", "build", name, "--manual_dir=<folder>"]
  if config:
    words.append(f"--config={config}")
  if data_dir:
    words.append(f"--data_dir={data_dir}")
  return shlex.join(words).replace("'--manual_dir=<folder>'", "--manual_dir=<folder>")


def prepared_dir(data_dir: str, name: str, config: str | None = None) -> Path | None:
  """The folder of the newest prepared version of ``name[/config]`` in ``data_dir``, or None."""
  folder = Path(os.path.expanduser(data_dir)) / name
  if config:
    folder = folder / config
  versions = [p for p in folder.iterdir() if (p / "dataset_info.json").is_file()] if (
      folder.is_dir()) else []
  return max(versions, key=lambda p: tuple(int(x) for x in p.name.split(".")
                                           if x.isdigit())) if versions else None
