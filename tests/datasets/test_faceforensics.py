"""The FaceForensics++ builder (``datasets/faceforensics``), built through the command from a tiny
copy of the official layout: tiny videos of faces-mini faces, one split pair per partition."""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from agg_jax.datasets import DatasetError, builder_class, faces
from agg_jax.preprocess.images import read_image
from tests import synthetic_video
from tests.helpers import faces_mini, one_line_error, requires_faces_mini, run_module

PROG = "agg_jax.datasets"
PAIRS = {"train": ("000", "001"), "val": ("002", "003"), "test": ("004", "005")}
PARTITION = {"train": "train", "val": "validation", "test": "test"}
METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
FRAMES = 2  # of the 3 each video has
UNREADABLE = "manipulated_sequences/NeuralTextures/c23/videos/005_004.mp4"
CONFIG = json.dumps({"name": "c23_tiny", "compression": "c23", "frames": FRAMES})
BEAM = ("--beam_pipeline_options=--runner=DirectRunner,--direct_num_workers=1,"
        "--direct_running_mode=in_memory")

pytestmark = requires_faces_mini


def _videos_folder(root: Path, method: str) -> Path:
  group = "original_sequences/youtube" if method == "real" else f"manipulated_sequences/{method}"
  return root / group / "c23" / "videos"


def _write_video(path: Path, photo: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  synthetic_video.make_video([read_image(photo)], path, frames_per_photo=3, size=(192, 192),
                             photo_height=0.9)


def make_forensics(root: Path) -> Path:
  """The official layout: 6 originals, 4 methods x 6 fakes, one split pair per partition."""
  photos = iter(faces_mini("real/yonsei", 30))
  (root / "splits").mkdir(parents=True)
  for file_name, (a, b) in PAIRS.items():
    (root / "splits" / f"{file_name}.json").write_text(json.dumps([[a, b]]))
    for name in (a, b):
      _write_video(_videos_folder(root, "real") / f"{name}.mp4", next(photos))
    for method in METHODS:
      for name in (f"{a}_{b}", f"{b}_{a}"):
        _write_video(_videos_folder(root, method) / f"{name}.mp4", next(photos))
  (root / UNREADABLE).write_bytes(b"not a video")
  return root


def _build(manual_dir: Path, data_dir: Path, *extra):
  return run_module(PROG, "build", "faceforensics", f"--manual_dir={manual_dir}",
                    f"--data_dir={data_dir}", f"--config={CONFIG}", BEAM, *extra, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """(the build's output, the prepared dataset's builder)."""
  root = make_forensics(tmp_path_factory.mktemp("ff") / "FF++")
  data_dir = tmp_path_factory.mktemp("data")
  out = _build(root, data_dir)
  return out, tfds.builder_from_directory(data_dir / "faceforensics" / "c23_tiny" / "1.0.0")


def _split_names() -> list[str]:
  return sorted([faces.split_name(p, "real", "youtube") for p in PARTITION.values()] + [
      faces.split_name(p, "fake", m) for p in PARTITION.values() for m in METHODS])


def _identities(video_id: str) -> set[str]:
  return set(re.fullmatch(r"(\d+)(?:_(\d+))?", Path(video_id).stem).groups()) - {None}


def test_splits_hold_the_first_frames_of_each_pairs_videos(built):
  out, builder = built
  assert out.returncode == 1, out.stderr[-3000:]  # 1: a video was skipped
  assert sorted(builder.info.splits) == _split_names()
  assert {"train_real_youtube", "validation_fake_face2face", "test_fake_neuraltextures"} < set(
      builder.info.splits)
  counts = {s: builder.info.splits[s].num_examples for s in builder.info.splits}
  assert counts.pop("test_fake_neuraltextures") == FRAMES  # the other video is unreadable
  assert set(counts.values()) == {2 * FRAMES}
  for split in _split_names():
    partition, label, group = faces.parse_split_name(split)
    records = list(builder.as_data_source(split))
    for r in records:
      video = r["video_id"].decode()
      method = "real" if label == "real" else video.split("/")[1]
      assert (r["label"], r["method"].decode(), r["source"], r["compression"]) == (
          faces.LABELS.index(label), method, b"youtube", b"c23")
      assert faces.slug(method if label == "fake" else "youtube") == group
      assert r["path"].decode() == video and video.startswith(
          str(_videos_folder(Path(""), method)))
      pair = PAIRS[next(f for f, p in PARTITION.items() if p == partition)]
      assert _identities(video) <= set(pair), (split, video)
    assert sorted((r["video_id"], int(r["frame"])) for r in records) == sorted(
        (v, f) for v in {r["video_id"] for r in records} for f in range(FRAMES))


def test_faces_are_aligned_and_no_identity_crosses_partitions(built):
  _, builder = built
  partitions_of = {}
  for split in builder.info.splits:
    partition = faces.parse_split_name(split)[0]
    for r in builder.as_data_source(split):
      for identity in _identities(r["video_id"].decode()):
        partitions_of.setdefault(identity, set()).add(partition)
      face = faces.decode_png(r["image"])
      assert face.shape == (256, 256, 3) and face.mean() > 40, (split, r["video_id"])
  assert len(partitions_of) == 6 and all(len(p) == 1 for p in partitions_of.values())


def test_metadata_records_settings_and_the_unreadable_video(built):
  out, builder = built
  metadata = builder.info.metadata
  assert metadata["alignment"]["frames"] == FRAMES and metadata["alignment"]["size"] == 256
  assert metadata["alignment"]["sampling"] == "first"
  assert metadata["builder"] == {"size": 256, "frames": FRAMES, "detector": "hog",
                                 "compression": "c23"}
  skipped = metadata["skipped"]
  assert skipped["count"] == 1 and list(skipped["by_status"]) == ["error"]
  assert skipped["listed"][0]["path"] == UNREADABLE
  assert f"{UNREADABLE}: error" in out.stdout
  assert "FaceForensics++" in builder.info.citation and "ICCV" in builder.info.citation
  assert builder.info.homepage == "https://github.com/ondyari/FaceForensics"


@pytest.fixture
def small_forensics(tmp_path):
  """A copy of the layout to break: one pair (train) in the split files, videos never read."""
  root = tmp_path / "FF++"
  for method in ("real",) + METHODS:
    _videos_folder(root, method).mkdir(parents=True)
  for name in ("000", "001"):
    (_videos_folder(root, "real") / f"{name}.mp4").write_bytes(b"")
  for method in METHODS:
    for name in ("000_001", "001_000"):
      (_videos_folder(root, method) / f"{name}.mp4").write_bytes(b"")
  (root / "splits").mkdir()
  for file_name, pairs in (("train", [["000", "001"]]), ("val", []), ("test", [])):
    (root / "splits" / f"{file_name}.json").write_text(json.dumps(pairs))
  return root


def _fails(root: Path, data_dir: Path, *expected: str) -> None:
  """The build stops with one error line holding ``expected``, status 2, nothing prepared."""
  out = _build(root, data_dir)
  line = one_line_error(out, PROG)
  assert out.returncode == 2
  for text in expected:
    assert text in line, line
  assert not list(data_dir.rglob("dataset_info.json"))


def test_missing_split_file_says_where_it_belongs(small_forensics, tmp_path):
  (small_forensics / "splits" / "train.json").unlink()
  _fails(small_forensics, tmp_path / "data", f"no split file {small_forensics}/splits/train.json")


def test_empty_manual_folder_says_what_belongs_there(tmp_path):
  (tmp_path / "FF++").mkdir()
  _fails(tmp_path / "FF++", tmp_path / "data", "manual folder", "is missing or empty",
         "original_sequences/, manipulated_sequences/ and splits/")


def test_missing_method_folder_is_named(small_forensics, tmp_path):
  shutil.rmtree(small_forensics / "manipulated_sequences" / "FaceSwap")
  _fails(small_forensics, tmp_path / "data", "lacks 1 of the 5 video folders of c23",
         "manipulated_sequences/FaceSwap/c23/videos")


def test_videos_named_but_absent_are_counted_and_listed(small_forensics, tmp_path):
  (small_forensics / "splits" / "test.json").write_text(json.dumps([["007", "008"]]))
  _fails(small_forensics, tmp_path / "data", "10 videos that the split files name are not in",
         "original_sequences/youtube/c23/videos/007.mp4, original_sequences/youtube/c23/videos/"
         "008.mp4, manipulated_sequences/Deepfakes/c23/videos/007_008.mp4", ", ...")


@pytest.fixture(scope="module")
def module():
  """The builder's module (its helpers, for the checks that need no build)."""
  return sys.modules[builder_class("faceforensics").__module__]


def test_identity_in_two_partitions_and_malformed_split_files(small_forensics, module):
  items = module.forensics_items(small_forensics, "c23")
  assert len(items) == 10 and {i.split for i in items} == {
      faces.split_name("train", "real", "youtube")} | {
          faces.split_name("train", "fake", m) for m in METHODS}
  (small_forensics / "splits" / "val.json").write_text(json.dumps([["001", "009"]]))
  with pytest.raises(DatasetError, match="video 001 is in both the train and the validation"):
    module.read_splits(small_forensics)
  (small_forensics / "splits" / "val.json").write_text(json.dumps({"001": "009"}))
  with pytest.raises(DatasetError, match=r"val.json is not a JSON list of \[target, source\]"):
    module.read_splits(small_forensics)


def test_configs_one_per_compression(module):
  assert [c.name for c in module.Builder.BUILDER_CONFIGS] == ["c23", "c0", "c40"]
  assert [c.compression for c in module.Builder.BUILDER_CONFIGS] == ["c23", "c0", "c40"]
  assert {c.frames for c in module.Builder.BUILDER_CONFIGS} == {100}  # the paper's first 100
  assert module.ForensicsConfig(name="c40_small", compression="c40").compression == "c40"
  with pytest.raises(ValueError, match="compression 'c23_small' is not one of"):
    module.ForensicsConfig(name="c23_small")
