"""The protocol grid end to end on real faces, as a user runs it: one cell of
configs/faces_mini.py (the tiny model, 2 steps, a small face_folder of faces-mini photos), its
shortcut audit, the analysis of its aggregation run and the page; then a rerun that trains
nothing, and the command-line mistakes."""

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import faces_mini, one_line_error, requires_faces_mini, run_module

pytestmark = requires_faces_mini
PROG = "agg_jax.grid"
FOLDERS = {"real/yonsei": 16, "real/amfd": 3, "fake/gan": 10, "fake/photoshop": 10,
           "fake/sd21": 10}
SPLIT = json.dumps({"name": "tiny", "train": 0.5, "validation": 0.25})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
  """(manual folder, data_dir) of a face_folder dataset made from faces-mini photos."""
  root = tmp_path_factory.mktemp("grid")
  manual = root / "faces"
  for folder, count in FOLDERS.items():
    (manual / folder).mkdir(parents=True)
    for photo in faces_mini(folder, count):
      shutil.copy(photo, manual / folder)
  out = run_module("agg_jax.datasets", "build", "face_folder", f"--manual_dir={manual}",
                   f"--data_dir={root / 'tfds'}", f"--config={SPLIT}", timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return manual, root / "tfds"


def grid(prepared, out: Path, *extra, cache: str = ""):
  manual, data_dir = prepared
  return run_module(
      PROG, "--config=configs/faces_mini.py", f"--out={out / 'runs'}",
      f"--report={out / 'page.md'}", f"--manual_dir={manual}", "--methods=gan", "--seeds=0",
      "--controls=face_crop", "--heads=aggregation,trimmed", f"--compilation_cache={cache}",
      f"--set=data.data_dir='{data_dir}'", "--set=data.dataset='face_folder/tiny'",
      "--set=model.init_from=''", "--set=model.name='efficientnetv2_tiny'",
      "--set=model.hidden=(16,)", "--set=data.image_size=32",
      "--set=train.batch_size=8", "--set=train.eval_batch_size=16", "--set=train.num_steps=2",
      "--set=train.eval_every=2", "--set=train.checkpoint_every=2", "--set=train.warmup_steps=0",
      "--set=analysis.cam_chunk=64", *extra, timeout=900)


def test_one_cell_from_audit_to_page(prepared, tmp_path, xla_cache):
  out = grid(prepared, tmp_path, cache=xla_cache)
  assert out.returncode == 0, out.stderr[-3000:]
  workdir = tmp_path / "runs" / "face_crop" / "aggregation" / "gan" / "seed0"
  cell = json.loads((workdir / "results" / "cell.json").read_text())
  assert sorted(cell["ap"]) == ["gan", "photoshop", "sd21"]
  assert sorted(cell["trimmed"]) == ["gan", "photoshop", "sd21"]
  assert all(0 <= ap <= 100 for ap in [*cell["ap"].values(), *cell["trimmed"].values()])
  assert len(cell["ranking"]) == 7  # the tiny model's blocks, most important first
  unseen = cell["unseen_real"]
  assert unseen["source"] == "amfd" and unseen["faces"] == 3  # studio faces: no padding
  assert 0 <= unseen["false_positive_rate"] <= 1

  # With the crop and no padding allowed, padding is no cue at all: every test set's AP is
  # exactly its fraction of fakes; the faces with padding in their crop were left out.
  audit = json.loads((tmp_path / "runs" / "face_crop" / "shortcuts.json").read_text())
  for test, ap in audit["cues"]["padding"]["gan"].items():
    assert ap == pytest.approx(100 * audit["fake_fraction"][test])
  assert audit["cues"]["jpeg_quality"]["gan"]["gan"] == pytest.approx(
      100 * audit["fake_fraction"]["gan"])  # faces-mini: every photo saved at quality 95
  assert "data.max_padding=0.0:" in out.stdout

  page = (tmp_path / "page.md").read_text()
  for heading in ("## Shortcuts: what a cue alone reaches", "## Results with control `face_crop`",
                  "## Unseen real photos", "## Layer importance and CAMs", "## Time and commands"):
    assert heading in page
  assert "python -m agg_jax.main --config=configs/faces_mini.py:gan --workdir=" in page
  assert (tmp_path / "page" / "importance.png").stat().st_size > 0
  assert (tmp_path / "page" / "cam_score.png").stat().st_size > 0

  again = grid(prepared, tmp_path, cache=xla_cache)  # everything done: nothing is trained
  assert again.returncode == 0, again.stderr[-3000:]
  assert "agg_jax.main --config" not in again.stdout and "train:" not in again.stderr


@pytest.mark.parametrize("flag, expected", [
    ("--controls=nothing", "--controls: unknown ['nothing']"),
    ("--methods=deepfakes", "--methods: unknown ['deepfakes']"),
    ("--heads=plain", "--heads=plain: use some of"),
    ("--seeds=a", "--seeds=a: whole numbers"),
    ("--set=train.num_steps", "--set=train.num_steps: expected KEY=VALUE"),
    ("--set=train.steps=3", "train.steps: the config has no such field"),
])
def test_command_line_mistakes_are_one_line(prepared, tmp_path, flag, expected):
  assert expected in one_line_error(grid(prepared, tmp_path, flag), PROG)
