"""`python -m agg_jax.predict` as a user runs it on an exported tiny run: a folder mixing photos, a
two-face photo, a video, broken, faceless and unsupported files, and a missing path; one JSON
line each, probabilities equal to the training-time model's, CAM overlays, no training code."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from agg_jax import evaluate, exported, run, sharding
from agg_jax.preprocess import Aligner, Settings
from agg_jax.preprocess.images import read_image
from tests import synthetic_video
from tests.helpers import REPO, faces_mini, one_line_error, requires_faces_mini, run_module
from tests.preprocess.test_preprocess_aligner import two_faces

pytestmark = requires_faces_mini

TRAINING_MODULES = ("flax", "optax", "orbax", "agg_jax.models", "agg_jax.train",
                    "agg_jax.analysis", "agg_jax.export")
PHOTOS = {"real/yonsei_0.jpg": ("real/yonsei", 0), "real/yonsei_1.jpg": ("real/yonsei", 1),
          "fake/gan_0.jpg": ("fake/gan", 0)}  # name: faces-mini folder, index
STATUSES = {**{name: "ok" for name in PHOTOS}, "two_faces.png": "ok", "clip.mp4": "ok",
            "gray.jpg": "no_face", "notes.txt": "unsupported"}


def predict(*args, cache: str = "") -> subprocess.CompletedProcess:
  return run_module("agg_jax.predict", f"--compilation_cache={cache}", *args)


@pytest.fixture(scope="module")
def export(tiny_export):
  """The session's tiny run (6 steps, 32 px; conftest), exported: its run directory."""
  return tiny_export[0]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
  """A folder of every kind of input, with subfolders."""
  folder = tmp_path_factory.mktemp("mixed")
  for name, (source, index) in PHOTOS.items():
    (folder / name).parent.mkdir(exist_ok=True)
    (folder / name).write_bytes(open(faces_mini(source, 1, start=index)[0], "rb").read())
  cv2.imwrite(str(folder / "two_faces.png"), cv2.cvtColor(two_faces(), cv2.COLOR_RGB2BGR))
  cv2.imwrite(str(folder / "gray.jpg"), np.full((200, 200, 3), 128, np.uint8))
  synthetic_video.make_video([read_image(faces_mini("real/yonsei", 1, start=2)[0])],
                             folder / "clip.mp4", frames_per_photo=8, size=(320, 240))
  (folder / "broken.jpg").write_bytes((folder / "fake/gan_0.jpg").read_bytes()[:3000])
  (folder / "text.png").write_text("not a picture\n")
  (folder / "notes.txt").write_text("not a picture either\n")
  return folder


@pytest.fixture(scope="module")
def predicted(export, mixed, tmp_path_factory, xla_cache):
  """predict on the mixed folder and a missing path, with --output, --cam and --frames=6."""
  out_dir = tmp_path_factory.mktemp("out")
  missing = mixed.parent / "absent.jpg"
  out = predict(f"--model={export / 'export'}", f"--output={out_dir}", "--cam", "--frames=6",
                "--batch=4", mixed, missing, cache=xla_cache)
  lines = (out_dir / "predictions.jsonl").read_text().splitlines()
  records = {rec["path"].replace(f"{mixed}/", ""): rec for rec in map(json.loads, lines)}
  return out, out_dir, records


def test_one_line_per_input_with_its_status(predicted, mixed):
  out, out_dir, records = predicted
  assert out.returncode == 1, out.stderr[-3000:]  # not every input was scored
  assert out.stdout == ""  # the lines went to --output
  assert len(records) == 10
  assert {name: records[name]["status"] for name in STATUSES} == STATUSES
  assert records["broken.jpg"]["status"].startswith("error: cannot decode JPEG")
  assert records["text.png"]["status"] == ("error: not a readable image (unknown or corrupt "
                                           "format)")
  assert records[str(mixed.parent / "absent.jpg")]["status"] == "error: no such file or directory"
  assert {name: records[name]["kind"] for name in ("clip.mp4", "gray.jpg", "notes.txt")} == {
      "clip.mp4": "video", "gray.jpg": "image", "notes.txt": None}
  assert "agg_jax.predict: 10 inputs: 5 scored (" in out.stderr
  assert (f"), 1 without a face, 3 errors, 1 unsupported; predictions in "
          f"{out_dir / 'predictions.jsonl'}") in out.stderr
  assert "predict: 100%" in out.stderr and "Traceback" not in out.stderr


def test_photos_faces_labels_and_the_largest_face(predicted, export):
  _, _, records = predicted
  threshold = exported.load(export / "export").threshold
  for name in [*PHOTOS, "two_faces.png"]:
    rec = records[name]
    largest = [face for face in rec["faces"] if face["largest"]]
    assert len(largest) == 1 and rec["probability"] == largest[0]["probability"]
    for face in rec["faces"]:
      assert face["label"] == ("fake" if face["probability"] >= threshold else "real")
    assert rec["threshold"] == pytest.approx(threshold)
  two = records["two_faces.png"]["faces"]
  assert [face["index"] for face in two] == [0, 1] and [f["largest"] for f in two] == [True, False]
  width = [face["box"][2] - face["box"][0] for face in two]
  assert width[0] > 1.4 * width[1] and two[0]["box"][0] < two[1]["box"][0]  # the left one
  assert records["gray.jpg"]["faces"] == [] and records["gray.jpg"]["probability"] is None


def test_a_video_is_the_mean_of_its_frames(predicted):
  rec = predicted[2]["clip.mp4"]
  assert [frame["frame"] for frame in rec["frames"]] == list(range(6))  # --frames=6 of 8
  assert rec["frames_scored"] == 6 and rec["frames_without_face"] == 0
  assert rec["aggregation"] == "mean of frame probabilities"
  assert rec["probability"] == pytest.approx(np.mean([f["probability"] for f in rec["frames"]]))


def test_cam_overlays_are_written_and_named(predicted, export):
  _, out_dir, records = predicted
  layers = exported.load(export / "export").cam_layers
  faces = [face for rec in records.values() for face in rec.get("faces", []) + rec.get(
      "frames", []) if face["probability"] is not None]
  assert len(faces) == 3 + 2 + 6
  for face in faces:
    assert len(face["cam"]) == len(layers) == 2
    for name, layer in zip(face["cam"], layers):
      assert name.startswith("cam/") and name.endswith(f"_{layer}.png")
      assert cv2.imread(str(out_dir / name)).shape == (256, 256, 3)
  assert len(set(name for face in faces for name in face["cam"])) == 2 * len(faces)


def test_probabilities_equal_the_training_time_models(predicted, export, mixed):
  """The faces predict scores, through the run's best checkpoint and the function that scored
  the run's test sets."""
  _, _, records = predicted
  detector = exported.load(export / "export")
  aligner = Aligner(Settings(**detector.alignment))
  faces = [aligner.image(read_image(mixed / name)).face for name in PHOTOS]
  faces += [face.face for face in aligner.faces(read_image(mixed / "two_faces.png"))]
  images = detector.prepare(np.stack(faces))
  config = run.load_config(export)
  mesh = sharding.make_mesh(config.mesh)
  model, variables = run.restore_best(export, config, mesh)
  expected = np.asarray(evaluate.make_predict_fn(model, mesh)(variables, images))
  got = [records[name]["probability"] for name in PHOTOS]
  got += [face["probability"] for face in records["two_faces.png"]["faces"]]
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_threshold_changes_labels_and_good_photos_exit_0(predicted, export, mixed, xla_cache):
  _, _, records = predicted
  probabilities = [records[name]["probability"] for name in PHOTOS]
  threshold = (min(probabilities) + max(probabilities)) / 2
  out = predict(f"--model={export / 'export'}", f"--threshold={threshold}", mixed / "real",
                mixed / "fake", cache=xla_cache)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = [json.loads(line) for line in out.stdout.splitlines()]
  assert [rec["path"].replace(f"{mixed}/", "") for rec in lines] == [
      "real/yonsei_0.jpg", "real/yonsei_1.jpg", "fake/gan_0.jpg"]
  assert {rec["label"] for rec in lines} == {"fake", "real"}
  for rec in lines:
    assert rec["label"] == ("fake" if rec["probability"] >= threshold else "real")
    assert rec["probability"] == pytest.approx(records[rec["path"].replace(f"{mixed}/", "")][
        "probability"], abs=1e-6)
  assert "predictions in standard output" in out.stderr


def test_usage_mistakes_are_one_line(export, tmp_path):
  assert "--model is missing" in one_line_error(predict(tmp_path), "agg_jax.predict")
  out = predict(f"--model={export / 'export'}")
  assert "no PATH given" in one_line_error(out, "agg_jax.predict") and out.returncode == 2
  out = predict(f"--model={tmp_path}", tmp_path)
  assert "not an export folder" in one_line_error(out, "agg_jax.predict")
  out = predict(f"--model={export / 'export'}", "--cam", tmp_path)
  assert "give --output" in one_line_error(out, "agg_jax.predict") and out.returncode == 2


def test_predict_imports_no_training_code():
  code = ("import sys, agg_jax.predict; print(sorted(m for m in sys.modules for t in "
          f"{TRAINING_MODULES!r} if m == t or m.startswith(t + '.')))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=300, check=True)
  assert out.stdout.strip() == "[]"
