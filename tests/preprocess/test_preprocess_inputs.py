"""Bad inputs, the command line, input discovery and resuming; needs no shared data.

The bad inputs themselves are in ``broken_files``, which test_preprocess_faces.py also uses, next
to real faces.
"""

import json
import os
import subprocess

import pytest
from PIL import Image

from agg_jax.preprocess import dlib_models, runner
from agg_jax.preprocess.manifest import MANIFEST, Manifest, read_records
from agg_jax.preprocess.pipeline import Settings
from agg_jax.preprocess.sources import discover, kind_of
from tests.helpers import one_line_error, run_module
from tests.preprocess.broken_files import (BROKEN, check_broken_records, noise, noise_video,
                                           write_broken_files)

PROG = "agg_jax.preprocess"


def test_broken_files_become_records_and_the_run_goes_on(tmp_path):
  write_broken_files(tmp_path / "in")
  Image.fromarray(noise(seed=7)).save(tmp_path / "in" / "good_noise.png")
  summary = runner.run([str(tmp_path / "in")], str(tmp_path / "out"),
                       Settings(frames=100), workers=1, progress=False)
  records = read_records(str(tmp_path / "out"))
  check_broken_records(records)
  good = [r for r in records if r["source"].endswith("good_noise.png")]
  assert [r["status"] for r in good] == ["no_face"]
  assert summary.errors == len(BROKEN) + sum(r["status"].startswith("error") for r in records
                                             if r["source"].endswith("truncated.avi"))
  assert summary.ok == 0 and summary.sources == len(BROKEN) + 2


def _cli(*args) -> subprocess.CompletedProcess:
  return run_module(PROG, "--noprogress", *args, timeout=300)


def test_cli_usage_errors_exit_non_zero_with_a_message(tmp_path):
  """Usage mistakes: one line ``agg_jax.preprocess: error: ...``, status 2, nothing written."""
  missing = tmp_path / "missing_folder"
  result = _cli(f"--input={missing}", f"--output={tmp_path / 'out'}")
  assert result.returncode == 2 and f"input {missing} does not exist" in result.stderr
  assert one_line_error(result, PROG) == f"{PROG}: error: input {missing} does not exist"
  assert not (tmp_path / "out").exists()  # The inputs are checked before the output is made.
  not_a_folder = tmp_path / "file.txt"
  not_a_folder.write_text("x")
  Image.fromarray(noise()).save(tmp_path / "a.png")
  result = _cli(f"--input={tmp_path / 'a.png'}", f"--output={not_a_folder}")
  assert result.returncode == 2 and "cannot write to output folder" in result.stderr
  assert "cannot write to output folder" in one_line_error(result, PROG)
  result = _cli(f"--input={tmp_path / 'a.png'}", f"--output={not_a_folder / 'sub'}")
  assert result.returncode == 2 and "cannot write to output folder" in result.stderr
  assert "cannot write to output folder" in one_line_error(result, PROG)
  result = _cli(f"--output={tmp_path / 'out'}")
  assert result.returncode == 2 and "no input" in result.stderr
  assert "no input" in one_line_error(result, PROG)
  result = _cli(f"--input={tmp_path / 'a.png'}")
  assert result.returncode != 0 and "--output" in result.stderr
  assert result.returncode == 2 and "--output" in one_line_error(result, PROG)
  result = _cli(f"--input={tmp_path / 'a.png'}", f"--output={tmp_path / 'out'}", "--frames=0")
  assert result.returncode == 2
  assert one_line_error(result, PROG).endswith("--frames=0: must be at least 1")
  result = _cli(f"--input={tmp_path / 'a.png'}", f"--output={tmp_path / 'out'}", "--sampling=x")
  assert result.returncode == 2 and "--sampling" in one_line_error(result, PROG)
  assert not (tmp_path / "out").exists()


def test_cli_exit_one_on_bad_files_and_rerun_skips_done(tmp_path):
  write_broken_files(tmp_path / "in")
  out = tmp_path / "out"
  result = _cli(f"--input={tmp_path / 'in'}", f"--output={out}", "--workers=2")
  assert result.returncode == 1, result.stderr  # Bad files could not be processed; the rest is.
  assert f"{len(BROKEN) + 1} files found, 0 already done" in result.stderr
  lines = (out / MANIFEST).read_text().splitlines()
  result = _cli(str(tmp_path / "in"), f"--output={out}")  # Positional inputs work too.
  assert result.returncode == 0, result.stderr
  assert f"{len(BROKEN) + 1} already done" in result.stderr and "0 frames/images" in result.stderr
  assert (out / MANIFEST).read_text().splitlines() == lines  # Nothing redone, nothing lost.
  result = _cli(f"--input={tmp_path / 'in'}", f"--output={out}", "--frames=10")
  assert result.returncode == 2 and "settings" in result.stderr  # Options differ: refused.
  assert "settings" in one_line_error(result, PROG)


def test_torn_manifest_line_is_dropped_and_retry_errors_redoes(tmp_path):
  Image.fromarray(noise()).save(tmp_path / "a.png")
  (tmp_path / "b.jpg").write_bytes(b"")
  out = str(tmp_path / "out")
  runner.run([str(tmp_path)], out, workers=1, progress=False)
  with open(os.path.join(out, MANIFEST), "a") as f:
    f.write('{"source": "/x.png", "frame": nu')  # A run killed mid-write.
  manifest = Manifest(out)
  assert manifest.dropped_lines == 1 and len(read_records(out)) == 2
  again = runner.run([str(tmp_path)], out, workers=1, progress=False)
  assert again.skipped_done == 2 and again.frames == 0
  retry = runner.run([str(tmp_path)], out, workers=1, progress=False, retry_errors=True)
  assert retry.skipped_done == 1 and retry.errors == 1
  assert len(read_records(out)) == 2  # The redone source's old record was replaced.


def test_discovery_mirrors_the_tree_and_sniffs_content(tmp_path):
  (tmp_path / "a" / "b").mkdir(parents=True)
  (tmp_path / ".hidden").mkdir()
  for name in ("a/b/x.jpg", "a/b/x.png", "a/y.png", ".hidden/z.png"):
    Image.fromarray(noise()).save(tmp_path / name, "PNG")
  noise_video(tmp_path / "a" / "clip.avi", 2, "MJPG")
  (tmp_path / "a" / "notes.txt").write_text("skip me")
  Image.fromarray(noise()).save(tmp_path / "a" / "photo.mp4", "JPEG")  # Wrong extension.
  sources, skipped = discover([str(tmp_path / "a")], str(tmp_path / "out"))
  got = {os.path.relpath(s.path, tmp_path): (s.output, s.kind) for s in sources}
  assert got == {"a/b/x.jpg": ("b/x_jpg", "image"), "a/b/x.png": ("b/x_png", "image"),
                 "a/y.png": ("y", "image"), "a/clip.avi": ("clip", "video"),
                 "a/photo.mp4": ("photo", "image")}
  assert skipped == 1
  assert "content is image" in kind_of(tmp_path / "a" / "photo.mp4")[1]
  two, _ = discover([str(tmp_path / "a" / "y.png"), str(tmp_path / "a" / "b")], "/nonexistent")
  assert sorted(s.output for s in two) == ["b/x_jpg", "b/x_png", "y"]


def test_missing_landmark_model_says_how_to_install(monkeypatch, tmp_path):
  monkeypatch.setattr(dlib_models, "search_dirs", lambda: [tmp_path])
  with pytest.raises(dlib_models.ModelNotFoundError) as e:
    dlib_models.find_model(dlib_models.LANDMARKS_68)
  message = str(e.value)
  assert "shape_predictor_68_face_landmarks.dat" in message
  assert "pip install face-recognition-models" in message and "libdlib-data" in message
  Image.fromarray(noise()).save(tmp_path / "a.png")
  with pytest.raises(runner.UsageProblem, match=dlib_models.LANDMARKS_68):
    runner.run([str(tmp_path / "a.png")], str(tmp_path / "out"), workers=1, progress=False)
  assert not (tmp_path / "out").exists()  # Refused before the output folder is made.


def test_manifest_records_are_json_lines(tmp_path):
  Image.fromarray(noise()).save(tmp_path / "a.png")
  runner.run([str(tmp_path / "a.png")], str(tmp_path / "out"), workers=1, progress=False)
  (line,) = (tmp_path / "out" / MANIFEST).read_text().splitlines()
  record = json.loads(line)
  assert record["source"] == str(tmp_path / "a.png") and record["status"] == "no_face"
  assert record["frame"] is None and record["faces"] == 0
  assert record["settings"] == Settings().key()
