"""Every experiment config loads, and every field is valid up to the data it needs.

Run from a clone without prepared datasets, each real-data config stops, before any compute, at
its first dataset with the command that builds it; everything before (model, weights, fields
of the data source) passes the same checks `python -m agg_jax.main` makes.
"""

import importlib

import pytest

from agg_jax import run
from agg_jax.config_validation import ConfigError
from tests.helpers import REPO

EXPERIMENTS = {  # config -> (training set, test sets, builder of its first dataset)
    "ff_df": ("deepfakes", 4, "faceforensics"), "ff_f2f": ("face2face", 4, "faceforensics"),
    "ff_fs": ("faceswap", 4, "faceforensics"), "ff_nt": ("neuraltextures", 4, "faceforensics"),
    "synth_pgan": ("synthetic_faces/celebahq_pgan:pgan", 7, "synthetic_faces"),
    "faces_mini": ("gan", 3, "face_folder"),
}


def test_every_config_file_is_listed():
  files = {p.stem for p in (REPO / "configs").glob("*.py")} - {"__init__", "default", "demo",
                                                               "faceforensics"}
  assert files == set(EXPERIMENTS)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_a_config_checks_up_to_its_missing_dataset(name, tmp_path):
  config = importlib.import_module(f"configs.{name}").get_config()
  train_set, test_sets, builder = EXPERIMENTS[name]
  assert config.data.source == "tfds" and config.data.train_set == train_set
  assert len(config.data.test_sets) == test_sets
  config.data.data_dir = str(tmp_path)
  config.model.init_from = ""  # `make weights` output; checked in tests/weights
  with pytest.raises(ConfigError) as error:
    run.check_config(config, device_count=1)
  message = str(error.value)
  assert f"is not prepared in {tmp_path}" in message
  assert f"python -m agg_jax.datasets build {builder} --manual_dir=<folder>" in message


def test_faces_mini_takes_the_training_method_after_a_colon():
  from configs import faces_mini
  assert faces_mini.get_config("sd21").data.train_set == "sd21"
  assert faces_mini.get_config().model.init_from == "weights/efficientnet_lite0"


def test_faces_mini_grid_settings_name_fields_of_its_config():
  """The grid's controls and shared budget override fields the config has, with valid values."""
  from agg_jax.grid import cells
  from configs import faces_mini
  for control in faces_mini.CONTROLS:
    cell = cells.Cell(control, "logits", "gan", 0)
    config = cells.cell_config(faces_mini, cell, faces_mini.CONTROLS, faces_mini.GRID)
    assert config.seed == 0 and config.model.head == "logits"
    for key, value in {**faces_mini.CONTROLS[control], **faces_mini.GRID}.items():
      section, field = key.split(".")
      assert config[section][field] == value
  assert faces_mini.CONTROLS["face_crop"] == {"data.crop": 0.5, "data.max_padding": 0.0}
