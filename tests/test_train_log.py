"""Metrics as JSON lines and TensorBoard events, read back by TensorBoard's own reader."""

import importlib.util
import json
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agg_jax.train_log import JSONL, TENSORBOARD, TrainLog, tag


def _scalars(workdir) -> dict:
  accumulator = EventAccumulator(str(workdir / TENSORBOARD))
  accumulator.Reload()
  return {t: [(e.step, round(e.value, 6)) for e in accumulator.Scalars(t)]
          for t in accumulator.Tags()["scalars"]}


def _steps(workdir) -> list:
  return [json.loads(line)["step"] for line in (workdir / JSONL).read_text().splitlines()]


def test_values_reach_both_files_under_their_tags(tmp_path):
  log = TrainLog(str(tmp_path))
  log.write(10, loss=0.5, accuracy=0.75)
  log.write(10, val_ap=0.875)
  log.close()
  assert _scalars(tmp_path) == {"train/loss": [(10, 0.5)], "train/accuracy": [(10, 0.75)],
                                "validation/ap": [(10, 0.875)]}
  first, second = [json.loads(l) for l in (tmp_path / JSONL).read_text().splitlines()]
  assert first["loss"] == 0.5 and second["val_ap"] == 0.875 and first["step"] == 10
  assert tag("val_auc") == "validation/auc" and tag("learning_rate") == "train/learning_rate"


def test_a_resumed_run_holds_each_step_once(tmp_path):
  """Interrupted after logging step 6, resumed from the step-4 checkpoint: 6 is logged again."""
  log = TrainLog(str(tmp_path))
  for step in (2, 4, 6):
    log.write(step, loss=1.0 / step)
  log.close()
  with open(tmp_path / JSONL, "a", encoding="utf-8") as f:
    f.write('{"step": 8, "lo')  # Killed mid-write.
  resumed = TrainLog(str(tmp_path), start_step=4)  # Same second: file names must not clash.
  resumed.write(6, loss=0.125)
  resumed.write(8, loss=0.0625)
  resumed.close()
  assert _steps(tmp_path) == [2, 4, 6, 8]
  assert _scalars(tmp_path)["train/loss"] == [(2, 0.5), (4, 0.25), (6, 0.125), (8, 0.0625)]


def test_only_the_enabled_process_writes(tmp_path):
  log = TrainLog(str(tmp_path), enabled=False)
  log.write(1, loss=1.0)
  log.close()
  assert not list(tmp_path.iterdir())


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed: nothing to keep out")
def test_training_does_not_import_torch_through_tensorboardx():
  """tensorboardX imports torch whenever it is installed; a training process then holds torch
  (0.18 GB) for nothing. train_log keeps it out, and torch stays importable afterwards."""
  probe = ("import sys, agg_jax.train; loaded = 'torch' in sys.modules; import torch; "
           "print(loaded, torch.ones(2).sum().item())")
  done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                        check=True)
  assert done.stdout.split() == ["False", "2.0"]
