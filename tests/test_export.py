"""`--mode=export` and the exported detector: files, format checks, the threshold, parity with
the training-time model and the run's own scores, and a loader that needs no training code."""

import json
import shutil
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest

from agg_jax import data, exported, run, sharding
from agg_jax.export import choose_threshold
from agg_jax.preprocess.aligner import Settings
from tests.helpers import (REPO, one_line_error, run_module,
                           temp_bytes_and_under_the_minimising_scheduler)

TRAINING_MODULES = ("flax", "optax", "orbax", "agg_jax.models", "agg_jax.train",
                    "agg_jax.analysis", "agg_jax.export")


def main(*args, workdir, cache):
  return run_module("agg_jax.main", f"--workdir={workdir}", f"--compilation_cache={cache}",
                    *args)


def test_the_export_holds_its_contract(tiny_export):
  workdir, out = tiny_export
  folder = workdir / "export"
  assert sorted(p.name for p in folder.iterdir()) == [
      "cam.jaxexport", "detector.jaxexport", "model.json", "variables.safetensors"]
  info = json.loads((folder / "model.json").read_text())
  assert info["format_version"] == exported.FORMAT_VERSION
  assert info["input"]["image_size"] == 32 and info["input"]["range"] == [0, 255]
  assert info["input"]["alignment"] == Settings().key()
  assert info["input"]["crop"] == 1.0  # the demo run reads whole faces
  assert info["platforms"] == ["cpu", "tpu"]
  assert sorted(info["ranking"]) == info["blocks"] and len(info["blocks"]) == 7
  assert info["cam_layers"] == info["ranking"][:2]
  assert "validation split" in info["ranking_source"]
  assert info["threshold"]["validation_images"] == 16
  assert f"threshold {info['threshold']['value']:.4f}" in out.stdout
  detector = exported.load(folder)
  assert set(detector.variables) == {"params", "batch_stats"}  # no optimizer state


def test_prepare_reads_faces_as_the_run_did(tiny_export, tmp_path):
  """An export of a run that read the central half of each face (data.crop=0.5) gives the
  model that half of an aligned face, resized as the data source resized it."""
  folder = tmp_path / "export"
  shutil.copytree(tiny_export[0] / "export", folder)
  info = json.loads((folder / "model.json").read_text())
  info["input"]["crop"] = 0.5
  (folder / "model.json").write_text(json.dumps(info))
  faces = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
  prepared = exported.load(folder).prepare(faces)
  np.testing.assert_array_equal(prepared[0], cv2.resize(faces[0, 24:72, 24:72], (32, 32),
                                                        interpolation=cv2.INTER_AREA))
  assert prepared.shape == (2, 32, 32, 3)


def test_exported_scores_equal_the_runs_own_and_the_training_models(tiny_export):
  workdir, _ = tiny_export
  detector = exported.load(workdir / "export")
  config = run.load_config(workdir)
  split = data.load(config.data).test["gmm"]
  images = split.images.read(np.arange(len(split)))
  probabilities = detector.probabilities(images)
  saved = run.load_scores(run.scores_path(workdir, "gmm"))
  np.testing.assert_allclose(probabilities, saved["scores"], atol=1e-5)
  model, variables = run.restore_best(workdir, config, sharding.make_mesh(config.mesh))
  logits, _ = jax.jit(model.apply)(variables, images[:5])
  np.testing.assert_allclose(detector.probabilities(images[:5]), jax.nn.sigmoid(logits),
                             atol=1e-5)
  maps = detector.cam(images[:3])
  assert maps.shape == (3, 2, 32, 32) and maps.min() >= 0 and maps.max() <= 1
  with pytest.raises(ValueError, match=r"uint8 images \(B, 32, 32, 3\)"):
    detector.probabilities(images[:, :16])


def test_exported_scores_compile_with_xlas_scheduler_into_smaller_buffers(tiny_export):
  """As the run's own predictions (test_cpu_defaults): under the training step's
  memory-minimising scheduler every block output would live until the head's poolings."""
  workdir, _ = tiny_export
  detector = exported.load(workdir / "export")
  program = detector._detector  # pylint: disable=protected-access
  lowered = program.lower(detector.variables, np.zeros((8, 32, 32, 3), np.uint8))
  ours, minimising = temp_bytes_and_under_the_minimising_scheduler(lowered)
  assert ours < 0.85 * minimising, (ours, minimising)


def test_loading_an_export_imports_no_training_code(tiny_export):
  workdir, _ = tiny_export
  code = ("import sys, numpy as np; from agg_jax import exported; "
          f"d = exported.load({str(workdir / 'export')!r}); "
          "print(d.probabilities(np.zeros((2, 32, 32, 3), np.uint8)).shape); "
          f"names = {TRAINING_MODULES!r}; "
          "print(sorted(m for m in sys.modules if m in names or m.startswith(tuple(n + '.' "
          "for n in names))))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.splitlines() == ["(2,)", "[]"]


def test_a_wrong_or_damaged_export_is_refused_by_name(tiny_export, tmp_path):
  workdir, _ = tiny_export
  with pytest.raises(exported.ExportError, match="not an export folder"):
    exported.load(tmp_path)
  folder = tmp_path / "export"
  shutil.copytree(workdir / "export", folder)
  info = json.loads((folder / "model.json").read_text())
  (folder / "model.json").write_text(json.dumps({**info, "format_version": 99}))
  with pytest.raises(exported.ExportError, match="format version 99; this agg_jax reads "
                     "version 1"):
    exported.load(folder)
  (folder / "model.json").write_text(json.dumps(info))
  (folder / "detector.jaxexport").write_bytes(b"not a module")
  with pytest.raises(exported.ExportError, match="detector.jaxexport: not a serialized"):
    exported.load(folder)


def test_export_mistakes_are_one_line(tiny_export, tmp_path, xla_cache):
  workdir = tmp_path / "run"
  shutil.copytree(tiny_export[0], workdir)  # a failed export must leave the shared one alone
  out = main("--mode=export", "--platforms=gpu", workdir=workdir, cache=xla_cache)
  assert "--platforms=gpu: use some of cpu, cuda, rocm, tpu" in one_line_error(out,
                                                                              "agg_jax.main")
  out = main("--mode=export", "--trimmed=3", workdir=workdir, cache=xla_cache)
  assert "analysis/trimming.json is missing; run --mode=analyze first" in one_line_error(
      out, "agg_jax.main")


def test_the_threshold_maximises_youdens_j():
  labels = np.array([0, 0, 0, 1, 1, 1])
  scores = np.array([0.1, 0.4, 0.6, 0.35, 0.7, 0.9])
  chosen = choose_threshold(labels, scores)
  best = max(scores, key=lambda t: ((scores >= t) & (labels == 1)).mean() * 2 -
             ((scores >= t) & (labels == 0)).mean() * 2)
  assert best == 0.7  # and every threshold in (0.6, 0.7] labels the same: the middle is taken
  assert chosen["value"] == pytest.approx(0.65)
  assert chosen["tpr"] == pytest.approx(2 / 3) and chosen["fpr"] == 0.0
  assert chosen["accuracy"] == pytest.approx(5 / 6)
