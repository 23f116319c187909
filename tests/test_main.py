"""The entry point as a user runs it: config errors, a whole run, resumption, evaluation."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.model.name=efficientnetv2_tiny", "--config.model.hidden=(16,)",
        "--config.data.image_size=32", "--config.data.train_per_class=16",
        "--config.data.val_per_class=8", "--config.data.test_per_class=8",
        "--config.train.batch_size=8", "--config.train.eval_batch_size=16",
        "--config.train.warmup_steps=0", "--config.train.log_every=2",
        "--config.train.eval_every=2", "--config.train.checkpoint_every=2"]


def run_main(*args, workdir, cache=""):
  cmd = [sys.executable, "-m", "agg_jax.main", "--config=configs/demo.py",
         f"--workdir={workdir}", f"--compilation_cache={cache}", *args]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("override, message", [
    ("--config.train.batchsize=8",
     "--config.train.batchsize=8: the config has no key 'batchsize'. Did you mean \"batch_size\""),
    ("--config.model.name=resnet9", "config.model.name='resnet9': unknown model"),
    ("--config.data.train_set=stylegan", "config.data.train_set='stylegan'"),
    ("--config.train.batch_size=7", "config.train.batch_size=7: must be even"),
    ("--config.model.blocks=(0,99)", "no block 99"),
])
def test_bad_config_fails_before_any_compute_with_a_clear_message(tmp_path, override, message):
  out = run_main(override, workdir=tmp_path / "run")
  assert out.returncode != 0
  assert message in out.stderr
  assert "Traceback" not in out.stderr
  assert not (tmp_path / "run").exists()  # nothing was started


def tensorboard_scalars(workdir) -> dict:
  """{tag: [(step, value)]} of the run's event files, read by TensorBoard's own reader."""
  accumulator = EventAccumulator(str(workdir / "tensorboard"))
  accumulator.Reload()
  return {tag: [(e.step, pytest.approx(e.value)) for e in accumulator.Scalars(tag)]
          for tag in accumulator.Tags()["scalars"]}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, xla_cache):
  workdir = tmp_path_factory.mktemp("run")
  out = run_main(*TINY, "--config.train.num_steps=4", workdir=workdir, cache=xla_cache)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out


def test_a_run_writes_scores_metrics_and_tables(trained_run):
  workdir, out = trained_run
  config = json.loads((workdir / "config.json").read_text())
  assert config["train"]["batch_size"] == 8  # the resolved config, overrides applied
  metrics = json.loads((workdir / "results" / "metrics.json").read_text())
  assert metrics["train"] == "upsample"
  assert set(metrics["test_sets"]) == {"upsample", "gmm", "splice"}
  for name in ("upsample", "gmm", "splice"):
    with np.load(workdir / "results" / "scores" / f"{name}.npz") as f:
      assert f["scores"].shape == f["labels"].shape == (16,)
      assert ((f["scores"] >= 0) & (f["scores"] <= 1)).all()
      assert metrics["test_sets"][name]["frame"]["num_examples"] == 16
  summary = (workdir / "results" / "summary.md").read_text()
  assert "CoV^-1" in summary and "gmm" in summary
  assert "CoV^-1" in out.stdout  # the table is printed too
  assert (workdir / "results" / "ap.csv").exists()
  assert "analysis part" in out.stdout  # parameter counts in the log
  logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in logged if "loss" in r] == [2, 4]
  assert [r["step"] for r in logged if "val_ap" in r] == [2, 4]
  events = tensorboard_scalars(workdir)
  assert [step for step, _ in events["train/loss"]] == [2, 4]
  assert events["validation/ap"] == [(r["step"], r["val_ap"]) for r in logged if "val_ap" in r]


def test_a_longer_run_resumes_from_the_checkpoint(trained_run, tmp_path, xla_cache):
  workdir, _ = trained_run
  resumed = tmp_path / "resumed"
  subprocess.run(["cp", "-r", str(workdir), str(resumed)], check=True)
  out = run_main(*TINY, "--config.train.num_steps=6", workdir=resumed, cache=xla_cache)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "resumed from step 4" in out.stdout
  logged = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in logged if "loss" in r] == [2, 4, 6]
  assert [step for step, _ in tensorboard_scalars(resumed)["train/loss"]] == [2, 4, 6]


def test_evaluate_mode_rescores_with_the_best_checkpoint(trained_run, xla_cache):
  workdir, _ = trained_run
  with np.load(workdir / "results" / "scores" / "gmm.npz") as f:
    before = f["scores"]
  os.remove(workdir / "results" / "scores" / "gmm.npz")
  out = run_main(*TINY, "--config.train.num_steps=4", "--mode=evaluate", workdir=workdir,
                 cache=xla_cache)
  assert out.returncode == 0, out.stderr[-3000:]
  with np.load(workdir / "results" / "scores" / "gmm.npz") as f:
    np.testing.assert_allclose(f["scores"], before, rtol=1e-5, atol=1e-6)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_reproduce_the_single_process_run(trained_run, tmp_path, xla_cache):
  """Multi-host: 2 processes x 2 CPU devices, gloo collectives, each reading its own shard."""
  workdir, _ = trained_run
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  cmd = [sys.executable, "-m", "agg_jax.main", "--config=configs/demo.py",
         f"--workdir={tmp_path / 'multi'}", f"--compilation_cache={xla_cache}", *TINY,
         "--config.train.num_steps=4", "--distributed",
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
  procs = [subprocess.Popen(cmd + [f"--process_id={i}"], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  outputs = [p.communicate(timeout=900) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  assert "CoV^-1" in outputs[0][0] and "CoV^-1" not in outputs[1][0]  # process 0 reports
  for name in ("upsample", "gmm", "splice"):
    with np.load(workdir / "results" / "scores" / f"{name}.npz") as single, \
         np.load(tmp_path / "multi" / "results" / "scores" / f"{name}.npz") as multi:
      np.testing.assert_allclose(multi["scores"], single["scores"], rtol=1e-4, atol=1e-5)
