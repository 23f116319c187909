"""The entry point as a user runs it: mistakes, a whole run, resumption after a kill, evaluation
from the run directory alone, and two processes."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agg_jax import large_blocks
from agg_jax.models import cpu_kernels
from tests.helpers import (REPO, SIGTERM_AFTER_STEP_3, TINY_RUN, hooked_main, one_line_error,
                           run_module)

PROG = "agg_jax.main"
TINY = TINY_RUN[1:]  # the tiny run's flags without its --config
TEST_SETS = ("upsample", "gmm", "splice")


def run_main(*args, workdir, cache="", config="configs/demo.py"):
  config_flag = [f"--config={config}"] if config else []
  return run_module("agg_jax.main", *config_flag, f"--workdir={workdir}",
                    f"--compilation_cache={cache}", *args)


def scores(workdir) -> dict[str, np.ndarray]:
  out = {}
  for name in TEST_SETS:
    with np.load(workdir / "results" / "scores" / f"{name}.npz") as f:
      out[name] = f["scores"]
  return out


@pytest.mark.parametrize("override, message", [
    ("--config.train.batchsize=8",
     "--config.train.batchsize=8: the config has no key 'batchsize'. Did you mean \"batch_size\""),
    ("--config.train.batch_size=abc", "flag --config.train.batch_size=abc: invalid literal"),
    ("--config.model.name=resnet9", "config.model.name='resnet9': unknown model"),
    ("--config.data.train_set=stylegan", "config.data.train_set='stylegan'"),
    ("--config.train.batch_size=7", "config.train.batch_size=7: must be even"),
    ("--config.model.blocks=(0,99)", "no block 99"),
    ("--config.model.remat=all", "config.model.remat='all': use 'none' or one of"),
    ("--config.model.hidden=abc", "config.model.hidden=('abc',): must be a tuple of widths"),
    ("--config.data.image_size=4096", "the demo's photographs allow at most"),
    ("--config.data.source=nowhere", "config.data.source='nowhere': unknown"),
    ("--mode=bogus", "flag --mode=bogus: value should be one of <train|evaluate|analyze|export>"),
    ("stray", "unexpected arguments ['stray']"),
])
def test_a_mistake_is_one_line_before_any_compute_and_leaves_nothing(tmp_path, override, message):
  out = run_main(override, workdir=tmp_path / "run")
  assert message in one_line_error(out, PROG)
  assert out.returncode == 2
  assert not (tmp_path / "run").exists()  # nothing was started


def test_path_mistakes_are_one_line_and_leave_nothing(tmp_path):
  from agg_jax import weights  # pylint: disable=import-outside-toplevel
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  not_python = tmp_path / "not_python.py"
  not_python.write_text("def get_config(:\n")
  other = tmp_path / "mini_weights"
  weights.save(str(other), "efficientnetv2_mini", {"params": {"w": np.zeros(1, np.float32)}})
  cases = [
      (run_main(*TINY, f"--config.model.init_from={tmp_path / 'none'}", workdir=tmp_path / "r"),
       f"config.model.init_from='{tmp_path / 'none'}': not a directory"),
      (run_main(*TINY, f"--config.model.init_from={other}", workdir=tmp_path / "r"),
       "holds weights of 'efficientnetv2_mini', but model.name is 'efficientnetv2_tiny'"),
      (run_main(workdir=a_file), "is a file, not a run directory"),
      (run_main(workdir=tmp_path / "r", config="configs/nope.py"),
       "--config=configs/nope.py: cannot load it: [Errno 2] No such file"),
      (run_main(workdir=tmp_path / "r", config=not_python),
       f"{not_python}, line 1: invalid syntax: def get_config(:"),
      (run_main("--mode=evaluate", workdir=tmp_path / "missing", config=None),
       f"--workdir={tmp_path / 'missing'}: no run there"),
      (run_main("--mode=evaluate", workdir=tmp_path / "missing"), "no run there"),
      (run_main(workdir=tmp_path / "new", config=None), "holds no run yet: give --config=FILE"),
  ]
  for out, message in cases:
    assert message in one_line_error(out, PROG)
    assert out.returncode == 2
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "mini_weights", "not_python.py"]


def test_the_papers_config_is_accepted_and_its_data_can_be_made():
  """configs/default.py (EfficientNetV2-S at 256 px on the demo source) passes every check, and
  the demo makes 256-pixel images for it."""
  from agg_jax import data, run  # pylint: disable=import-outside-toplevel
  from configs import default  # pylint: disable=import-outside-toplevel
  config = default.get_config()
  run.check_config(config, device_count=1)
  images = data.load(config.data).test["upsample"].images.read([0, 511])
  assert images.shape == (2, 256, 256, 3) and images.dtype == np.uint8


def tensorboard_scalars(workdir) -> dict:
  """{tag: [(step, value)]} of the run's event files, read by TensorBoard's own reader."""
  accumulator = EventAccumulator(str(workdir / "tensorboard"))
  accumulator.Reload()
  return {tag: [(e.step, pytest.approx(e.value)) for e in accumulator.Scalars(tag)]
          for tag in accumulator.Tags()["scalars"]}


@pytest.fixture
def trained_run(tiny_run_output):
  """The session's 6-step tiny run, never interrupted (tests copy it before changing anything)."""
  return tiny_run_output


def test_a_run_writes_scores_metrics_and_tables(trained_run):
  workdir, out = trained_run
  config = json.loads((workdir / "config.json").read_text())
  assert config["train"]["batch_size"] == 8  # the resolved config, overrides applied
  metrics = json.loads((workdir / "results" / "metrics.json").read_text())
  assert metrics["train"] == "upsample"
  assert set(metrics["test_sets"]) == set(TEST_SETS)
  for name, values in scores(workdir).items():
    assert values.shape == (16,) and ((values >= 0) & (values <= 1)).all()
    assert metrics["test_sets"][name]["frame"]["num_examples"] == 16
  summary = (workdir / "results" / "summary.md").read_text()
  assert "CoV^-1" in summary and "gmm" in summary
  assert "CoV^-1" in out.stdout  # the table is printed too
  assert (workdir / "results" / "ap.csv").exists()
  assert "analysis part" in out.stdout  # parameter counts in the log
  logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in logged if "loss" in r] == [2, 4, 6]
  assert [r["step"] for r in logged if "val_ap" in r] == [2, 4, 6]
  events = tensorboard_scalars(workdir)
  assert [step for step, _ in events["train/loss"]] == [2, 4, 6]
  assert events["validation/ap"] == [(r["step"], r["val_ap"]) for r in logged if "val_ap" in r]


# SIGKILL while the step-4 checkpoint is being written: orbax writes it in the background after
# save() returns, into a temporary folder renamed only when complete.
KILLED_WHILE_SAVING_STEP_4 = hooked_main("""
    import os, signal, sys
    from agg_jax import checkpoint

    save_latest = checkpoint.RunCheckpoints.save_latest

    def save_and_die(self, step, state):
      save_latest(self, step, state)
      if step == 4:
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.RunCheckpoints.save_latest = save_and_die
""")

def interrupt(script: str, workdir, xla_cache) -> tuple[list[str], subprocess.CompletedProcess]:
  """Runs the tiny run's command in `workdir` through a hooked `script`; (the command, what the
  interrupted process returned)."""
  command = ["--config=configs/demo.py", f"--workdir={workdir}",
             f"--compilation_cache={xla_cache}", *TINY]
  return command, subprocess.run([sys.executable, "-c", script, *command], cwd=REPO,
                                 capture_output=True, text=True, timeout=900)


def resume_and_compare(command, workdir, resumed, expected_step):
  """Reruns `command` and checks it resumes from `expected_step` (one of them) and ends with the
  uninterrupted run's scores (bit for bit) and its logged steps."""
  out = run_module("agg_jax.main", *command)  # the same command again
  assert out.returncode == 0, out.stderr[-3000:]
  assert any(f"resumed from step {step}" in out.stdout for step in expected_step), out.stdout
  for name, values in scores(workdir).items():
    np.testing.assert_array_equal(scores(resumed)[name], values, err_msg=name)
  logged = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
  uninterrupted = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text()
                   .splitlines()]
  assert [r["step"] for r in logged if "loss" in r] == [2, 4, 6]
  assert [r.get("loss") for r in logged] == [r.get("loss") for r in uninterrupted]
  assert [step for step, _ in tensorboard_scalars(resumed)["train/loss"]] == [2, 4, 6]


def test_a_run_killed_while_checkpointing_resumes_to_the_uninterrupted_result(
    trained_run, tmp_path, xla_cache):
  workdir, _ = trained_run
  resumed = tmp_path / "resumed"
  command, killed = interrupt(KILLED_WHILE_SAVING_STEP_4, resumed, xla_cache)
  assert killed.returncode == -9, killed.stderr[-3000:]
  assert not (resumed / "results").exists()
  # Step 4 is restored only if its write had finished before the kill; never a partial one.
  resume_and_compare(command, workdir, resumed, expected_step=(2, 4))


def test_sigterm_saves_at_the_step_boundary_and_the_same_command_resumes(trained_run, tmp_path,
                                                                         xla_cache):
  workdir, _ = trained_run
  resumed = tmp_path / "resumed"
  command, stopped = interrupt(SIGTERM_AFTER_STEP_3, resumed, xla_cache)
  assert stopped.returncode == 75, stopped.stderr[-3000:]
  assert "Traceback" not in stopped.stderr
  assert (f"{PROG}: preempted (SIGTERM): stopped at step 3, checkpoint saved in {resumed}; the "
          "same command resumes from it") in stopped.stderr
  assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["3"]
  assert not (resumed / "results").exists()
  resume_and_compare(command, workdir, resumed, expected_step=(3,))


def test_evaluate_needs_the_run_directory_alone_and_reads_no_training_data(trained_run,
                                                                           tmp_path, xla_cache):
  run = tmp_path / "run"
  shutil.copytree(trained_run[0], run)
  config_bytes = (run / "config.json").read_bytes()
  before = scores(run)
  shutil.rmtree(run / "results")
  out = run_main("--mode=evaluate", "--verbosity=0", workdir=run, cache=xla_cache, config=None)
  assert out.returncode == 0, out.stderr[-3000:]
  for name, values in before.items():
    np.testing.assert_array_equal(scores(run)[name], values, err_msg=name)
  assert "efficientnetv2_tiny trained on upsample" in out.stdout
  assert (run / "config.json").read_bytes() == config_bytes
  made = [line.split("images of ")[1] for line in out.stderr.splitlines() if "demo: made" in line]
  assert sorted(made) == [f"test/{name}" for name in sorted(TEST_SETS)]  # no train, validation
  if large_blocks.wanted() and large_blocks.library() is not None:  # it started itself with it
    assert "XLA's large blocks: agg_jax.large_blocks" in out.stderr
  matmuls = "MKL" if cpu_kernels.matmul_enabled() else "XLA's dot"  # the same machine's answer
  assert f"matmuls over channels: {matmuls}" in out.stderr


def test_evaluate_with_a_config_that_disagrees_names_the_fields(trained_run, tmp_path,
                                                                xla_cache):
  run = tmp_path / "run"
  shutil.copytree(trained_run[0], run)
  config_bytes = (run / "config.json").read_bytes()
  out = run_main("--mode=evaluate", *TINY, "--config.data.train_set=gmm",
                 "--config.train.batch_size=4", workdir=run, cache=xla_cache)
  line = one_line_error(out, PROG)
  assert "disagrees with the run's saved" in line and "in 2 field(s)" in line
  assert "data.train_set: saved 'upsample', given 'gmm'" in line
  assert "train.batch_size: saved 8, given 4" in line
  assert (run / "config.json").read_bytes() == config_bytes
  # Fields that say how the run executes, not what it computes, may differ.
  out = run_main("--mode=evaluate", *TINY, "--config.train.eval_batch_size=8", workdir=run,
                 cache=xla_cache)
  assert out.returncode == 0, out.stderr[-3000:]
  assert (run / "config.json").read_bytes() == config_bytes


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_stop_together_on_sigterm_and_reproduce_the_single_process_run(
    trained_run, tmp_path, xla_cache):
  """Multi-host: 2 processes x 2 CPU devices, gloo collectives, each reading its own shard. A
  SIGTERM to one process stops both at the same step (JAX's preemption sync point), each having
  saved; the same commands resume and end with the single-process run's scores."""
  workdir, _ = trained_run
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")

  def launch(hook_process_1: bool) -> list[tuple[int, str, str]]:
    port = _free_port()
    args = ["--config=configs/demo.py", f"--workdir={tmp_path / 'multi'}",
            f"--compilation_cache={xla_cache}", *TINY, "--distributed",
            f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    procs = [subprocess.Popen(
        [sys.executable, *(["-c", SIGTERM_AFTER_STEP_3] if i == 1 and hook_process_1 else
                           ["-m", "agg_jax.main"]), *args, f"--process_id={i}"],
        cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(2)]
    return [(p.returncode, *p.communicate(timeout=900)) for p in procs
            if p.wait(timeout=900) is not None]

  stopped = launch(hook_process_1=True)
  for status, _, err in stopped:
    assert status == 75, err[-3000:]
  steps = [int(err.split("stopped at step ")[1].split(",")[0]) for _, _, err in stopped]
  assert steps[0] == steps[1] >= 3, steps
  assert sorted(p.name for p in (tmp_path / "multi" / "checkpoints").iterdir()) == [
      str(steps[0])]

  finished = launch(hook_process_1=False)
  for status, _, err in finished:
    assert status == 0, err[-3000:]
  assert f"resumed from step {steps[0]}" in finished[0][1]
  assert "CoV^-1" in finished[0][1] and "CoV^-1" not in finished[1][1]  # process 0 reports
  for name, values in scores(workdir).items():
    np.testing.assert_allclose(scores(tmp_path / "multi")[name], values, rtol=1e-4, atol=1e-5)
