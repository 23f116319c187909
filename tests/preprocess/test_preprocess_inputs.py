"""Bad inputs, the command line, input discovery and resuming; needs no shared data.

``write_broken_files`` is also used by test_preprocess_faces.py, next to real faces.
"""

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from agg_jax.preprocess import dlib_models, runner
from agg_jax.preprocess.manifest import MANIFEST, Manifest, read_records
from agg_jax.preprocess.pipeline import Settings
from agg_jax.preprocess.sources import discover, kind_of

REPO = Path(__file__).resolve().parents[2]


def _png_header(width: int, height: int) -> bytes:
  """A PNG whose header claims ``width`` x ``height`` but holds almost no data."""
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
          + chunk(b"IEND", b""))


def _noise(h=120, w=160, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).uniform(0, 255, (h, w, 3)).astype(np.uint8)


def _video(path: Path, frames: int, fourcc: str, size=(160, 120)) -> None:
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, size)
  for i in range(frames):
    writer.write(_noise(size[1], size[0], seed=i))
  writer.release()


# File name -> substring its (single) record's status must hold.
BROKEN = {
    "truncated.jpg": "error: cannot decode JPEG",
    "corrupt.jpg": "error: not a readable image",
    "corrupt_header.jpg": "error: not a readable image",
    "zero.jpg": "error: empty file",
    "zero.mp4": "error: empty file",
    "text_named.png": "error: not a readable image",
    "one_pixel.png": "error: image too small: 1x1",
    "bomb_30000.png": "error: image too large: header says 900 MP",
    "bomb_10000.png": "error: image too large: header says 10000x10000",
    "corrupt.mp4": "error: cannot open video",
    "truncated.mp4": "error: cannot open video",
    "no_frames.mp4": "error: cannot open video",
    "no_frames.avi": "error: video has no decodable frames",
}


def write_broken_files(folder: Path) -> None:
  """Every kind of bad input the issue lists (BROKEN), plus a truncated AVI whose first half
  still decodes (``truncated.avi``, 30 frames in its header)."""
  folder.mkdir(parents=True, exist_ok=True)
  jpeg = io.BytesIO()
  Image.fromarray(_noise()).save(jpeg, "JPEG")
  data = jpeg.getvalue()
  (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
  (folder / "corrupt.jpg").write_bytes(np.random.default_rng(1).bytes(4000))
  (folder / "corrupt_header.jpg").write_bytes(data[:200] + np.random.default_rng(2).bytes(3000))
  (folder / "zero.jpg").write_bytes(b"")
  (folder / "zero.mp4").write_bytes(b"")
  (folder / "text_named.png").write_text("this is not an image\n")
  Image.new("RGB", (1, 1)).save(folder / "one_pixel.png")
  (folder / "bomb_30000.png").write_bytes(_png_header(30000, 30000))
  (folder / "bomb_10000.png").write_bytes(_png_header(10000, 10000))
  (folder / "corrupt.mp4").write_bytes(np.random.default_rng(3).bytes(5000))
  _video(folder / "whole.mp4", 30, "mp4v")
  whole = (folder / "whole.mp4").read_bytes()
  (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
  (folder / "whole.mp4").unlink()
  _video(folder / "no_frames.mp4", 0, "mp4v")
  _video(folder / "no_frames.avi", 0, "MJPG")
  _video(folder / "whole.avi", 30, "MJPG")
  whole = (folder / "whole.avi").read_bytes()
  (folder / "truncated.avi").write_bytes(whole[: len(whole) // 2])
  (folder / "whole.avi").unlink()


def check_broken_records(records: list[dict]) -> None:
  """Each BROKEN file has its one error record; truncated.avi has one record per frame."""
  by_name = {}
  for r in records:
    by_name.setdefault(os.path.basename(r["source"]), []).append(r)
  for name, expected in BROKEN.items():
    assert name in by_name, f"{name} has no manifest record"
    (record,) = by_name[name]
    assert expected in record["status"], (name, record["status"])
    assert record["output"] is None
  truncated = sorted(by_name["truncated.avi"], key=lambda r: r["frame"])
  assert [r["frame"] for r in truncated] == list(range(30))  # Every frame the header promises.
  statuses = [r["status"] for r in truncated]
  assert statuses[0] == "no_face"  # Decoded (noise has no face).
  assert statuses[-1].startswith("error: frame cannot be decoded: the video stops at frame")
  assert all(r["frames_total"] == 30 for r in truncated)


def test_broken_files_become_records_and_the_run_goes_on(tmp_path):
  write_broken_files(tmp_path / "in")
  Image.fromarray(_noise(seed=7)).save(tmp_path / "in" / "good_noise.png")
  summary = runner.run([str(tmp_path / "in")], str(tmp_path / "out"),
                       Settings(frames=100), workers=1, progress=False)
  records = read_records(str(tmp_path / "out"))
  check_broken_records(records)
  good = [r for r in records if r["source"].endswith("good_noise.png")]
  assert [r["status"] for r in good] == ["no_face"]
  assert summary.errors == len(BROKEN) + sum(r["status"].startswith("error") for r in records
                                             if r["source"].endswith("truncated.avi"))
  assert summary.ok == 0 and summary.sources == len(BROKEN) + 2


def _cli(*args, env=None) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "agg_jax.preprocess", "--noprogress", *args],
                        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
                        check=False)


def test_cli_usage_errors_exit_non_zero_with_a_message(tmp_path):
  missing = tmp_path / "missing_folder"
  result = _cli(f"--input={missing}", f"--output={tmp_path / 'out'}")
  assert result.returncode == 2 and f"input {missing} does not exist" in result.stderr
  not_a_folder = tmp_path / "file.txt"
  not_a_folder.write_text("x")
  Image.fromarray(_noise()).save(tmp_path / "a.png")
  result = _cli(f"--input={tmp_path / 'a.png'}", f"--output={not_a_folder}")
  assert result.returncode == 2 and "cannot write to output folder" in result.stderr
  result = _cli(f"--input={tmp_path / 'a.png'}", f"--output={not_a_folder / 'sub'}")
  assert result.returncode == 2 and "cannot write to output folder" in result.stderr
  result = _cli(f"--output={tmp_path / 'out'}")
  assert result.returncode == 2 and "no input" in result.stderr
  result = _cli(f"--input={tmp_path / 'a.png'}")
  assert result.returncode != 0 and "--output" in result.stderr


def test_cli_exit_zero_on_bad_files_and_rerun_skips_done(tmp_path):
  write_broken_files(tmp_path / "in")
  out = tmp_path / "out"
  result = _cli(f"--input={tmp_path / 'in'}", f"--output={out}", "--workers=2")
  assert result.returncode == 0, result.stderr
  assert f"{len(BROKEN) + 1} files found, 0 already done" in result.stderr
  lines = (out / MANIFEST).read_text().splitlines()
  result = _cli(str(tmp_path / "in"), f"--output={out}")  # Positional inputs work too.
  assert result.returncode == 0, result.stderr
  assert f"{len(BROKEN) + 1} already done" in result.stderr and "0 frames/images" in result.stderr
  assert (out / MANIFEST).read_text().splitlines() == lines  # Nothing redone, nothing lost.
  result = _cli(f"--input={tmp_path / 'in'}", f"--output={out}", "--frames=10")
  assert result.returncode == 2 and "settings" in result.stderr  # Options differ: refused.


def test_torn_manifest_line_is_dropped_and_retry_errors_redoes(tmp_path):
  Image.fromarray(_noise()).save(tmp_path / "a.png")
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
    Image.fromarray(_noise()).save(tmp_path / name, "PNG")
  _video(tmp_path / "a" / "clip.avi", 2, "MJPG")
  (tmp_path / "a" / "notes.txt").write_text("skip me")
  Image.fromarray(_noise()).save(tmp_path / "a" / "photo.mp4", "JPEG")  # Wrong extension.
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


def test_manifest_records_are_json_lines(tmp_path):
  Image.fromarray(_noise()).save(tmp_path / "a.png")
  runner.run([str(tmp_path / "a.png")], str(tmp_path / "out"), workers=1, progress=False)
  (line,) = (tmp_path / "out" / MANIFEST).read_text().splitlines()
  record = json.loads(line)
  assert record["source"] == str(tmp_path / "a.png") and record["status"] == "no_face"
  assert record["frame"] is None and record["faces"] == 0
  assert record["settings"] == Settings().key()
