"""Bad inputs of every kind the preprocessing must survive, and noise pictures and videos (no
face in them); shared by the preprocess tests (``from tests.preprocess import broken_files``)."""

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def png_header(width: int, height: int) -> bytes:
  """A PNG whose header claims ``width`` x ``height`` but holds almost no data."""
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
          + chunk(b"IEND", b""))


def noise(h=120, w=160, seed=0) -> np.ndarray:
  """An (h, w, 3) uint8 picture of uniform noise: no face in it."""
  return np.random.default_rng(seed).uniform(0, 255, (h, w, 3)).astype(np.uint8)


def noise_video(path: Path, frames: int, fourcc: str, size=(160, 120)) -> None:
  """A video of ``frames`` noise frames (``noise`` with seeds 0, 1, ...)."""
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, size)
  for i in range(frames):
    writer.write(noise(size[1], size[0], seed=i))
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
  Image.fromarray(noise()).save(jpeg, "JPEG")
  data = jpeg.getvalue()
  (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
  (folder / "corrupt.jpg").write_bytes(np.random.default_rng(1).bytes(4000))
  (folder / "corrupt_header.jpg").write_bytes(data[:200] + np.random.default_rng(2).bytes(3000))
  (folder / "zero.jpg").write_bytes(b"")
  (folder / "zero.mp4").write_bytes(b"")
  (folder / "text_named.png").write_text("this is not an image\n")
  Image.new("RGB", (1, 1)).save(folder / "one_pixel.png")
  (folder / "bomb_30000.png").write_bytes(png_header(30000, 30000))
  (folder / "bomb_10000.png").write_bytes(png_header(10000, 10000))
  (folder / "corrupt.mp4").write_bytes(np.random.default_rng(3).bytes(5000))
  noise_video(folder / "whole.mp4", 30, "mp4v")
  whole = (folder / "whole.mp4").read_bytes()
  (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
  (folder / "whole.mp4").unlink()
  noise_video(folder / "no_frames.mp4", 0, "mp4v")
  noise_video(folder / "no_frames.avi", 0, "MJPG")
  noise_video(folder / "whole.avi", 30, "MJPG")
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
