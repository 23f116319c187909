"""The face_folder builder (``datasets/face_folder``) on a tiny folder in its layout: faces-mini
photos at two depths, two 3-frame videos of a faces-mini face, an unreadable photo and files it
ignores; built through the build command and read back as a user reads it."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from agg_jax.datasets import builder_class, faces, prepared_dir
from agg_jax.preprocess.images import read_image
from tests import synthetic_video
from tests.helpers import faces_mini, one_line_error, requires_faces_mini, run_module

pytestmark = requires_faces_mini

PROG = "agg_jax.datasets"
FRAMES = 3
FRACTIONS = {"train": 0.5, "validation": 0.25}
CONFIG = json.dumps({"name": "tiny", "frames": FRAMES, **FRACTIONS})
BROKEN = "fake/gan/broken.jpg"  # text, not a JPEG
# Each folder's groups (here its photos and videos, the broken one included) per partition:
# round(n * 0.5), round(n * 0.25) (Python's round: halves to even), the rest to test.
COUNTS = {"real/yonsei": (3, 2, 1), "real/other": (2, 1, 0), "fake/gan": (3, 2, 1),
          "fake/clips": (1, 0, 1)}


def _copy(photos: list[str], folder: Path) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  for photo in photos:
    shutil.copy(photo, folder)


def make_folder(root: Path) -> Path:
  """real/yonsei (6 photos, 2 a folder deeper), real/other (3), fake/gan (5 and the broken one),
  fake/clips (2 videos of 3 frames); hidden files and a text file that are not part of it."""
  yonsei = faces_mini("real/yonsei", 8)
  _copy(yonsei[:4], root / "real" / "yonsei")
  _copy(yonsei[4:6], root / "real" / "yonsei" / "session2")
  shutil.copy(yonsei[6], root / "real" / "yonsei" / ".hidden.jpg")
  _copy(yonsei[7:8], root / "real" / "yonsei" / ".cache")
  (root / "real" / "yonsei" / "notes.txt").write_text("not a photo")
  _copy(faces_mini("real/amfd", 3), root / "real" / "other")
  _copy(faces_mini("fake/gan", 5), root / "fake" / "gan")
  (root / BROKEN).write_text("this is text, not a JPEG")
  for name, photo in zip(("a.mp4", "b.mp4"), faces_mini("real/yonsei", 2, start=10)):
    (root / "fake" / "clips").mkdir(parents=True, exist_ok=True)
    synthetic_video.make_video([read_image(photo)], root / "fake" / "clips" / name,
                               frames_per_photo=FRAMES, size=(192, 192), photo_height=0.9)
  return root


def _build(manual_dir: Path, data_dir: Path, *extra, config: str = CONFIG):
  return run_module(PROG, "build", "face_folder", f"--manual_dir={manual_dir}",
                    f"--data_dir={data_dir}", f"--config={config}", *extra, timeout=300)


def _read(data_dir: Path, config: str = "tiny"):
  return tfds.builder_from_directory(str(prepared_dir(str(data_dir), "face_folder", config)))


def _records(builder) -> dict[str, list[dict]]:
  """Every example of every split, by split."""
  return {split: list(builder.as_data_source(split)) for split in builder.info.splits}


def _partition_of_paths(builder) -> dict[str, str]:
  """The partition of every path in the prepared dataset (asserting it has one only)."""
  partitions = {}
  for split, records in _records(builder).items():
    for r in records:
      path = r["path"].decode()
      assert partitions.setdefault(path, faces.parse_split_name(split)[0]) == (
          faces.parse_split_name(split)[0]), path
  return partitions


@pytest.fixture(scope="module")
def manual(tmp_path_factory) -> Path:
  return make_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="module")
def built(manual, tmp_path_factory):
  """(the build's output, its data_dir, the prepared dataset's builder): 2 worker processes."""
  data_dir = tmp_path_factory.mktemp("data")
  out = _build(manual, data_dir, "--workers=2")
  assert out.returncode == 1, out.stderr[-3000:]  # 1: the broken photo was skipped
  return out, data_dir, _read(data_dir)


@pytest.fixture(scope="module")
def module():
  """The builder's module (for the split assignment of the items, the broken one included)."""
  return sys.modules[builder_class("face_folder").__module__]


def test_splits_labels_and_fields_of_photos_and_video_frames(built):
  _, _, builder = built
  counts = {s: i.num_examples for s, i in builder.info.splits.items()}
  gan = [counts.pop(f"{p}_fake_gan") for p in faces.PARTITIONS]
  assert gan in ([2, 2, 1], [3, 1, 1])  # 3, 2, 1 less the broken photo (not alone in test)
  assert counts == {
      "train_real_yonsei": 3, "validation_real_yonsei": 2, "test_real_yonsei": 1,
      "train_real_other": 2, "validation_real_other": 1,  # round(3 * 0.5) = 2: no test
      "train_fake_clips": FRAMES, "test_fake_clips": FRAMES}  # round(2 * 0.25) = 0: no validation
  videos = {}
  for split, records in _records(builder).items():
    _, label, group = faces.parse_split_name(split)
    for r in records:
      path = r["path"].decode()
      assert path.startswith(f"{label}/{group}/"), (split, path)
      assert r["label"] == faces.LABELS.index(label)
      assert r["method"].decode() == ("real" if label == "real" else group)
      assert r["source"].decode() == group
      assert 0 <= r["padding"] <= 1 and r["compression"] == b""
      face = faces.decode_png(r["image"])
      assert face.shape == (256, 256, 3) and face.mean() > 40 and face.std() > 10, path
      if group == "clips":
        assert r["video_id"].decode() == path and path.endswith(".mp4")
        videos.setdefault(path, []).append((split, int(r["frame"])))
      else:
        assert r["video_id"] == b"" and r["frame"] == -1 and path.endswith(".jpg")
  assert sorted(videos) == ["fake/clips/a.mp4", "fake/clips/b.mp4"]
  for frames in videos.values():  # all frames of a video in one split
    assert len({split for split, _ in frames}) == 1
    assert sorted(frame for _, frame in frames) == list(range(FRAMES))


def test_hidden_and_other_files_are_not_part_of_it(built):
  _, _, builder = built
  paths = set(_partition_of_paths(builder))
  assert len(paths) == 6 + 3 + 5 + 2
  assert {"real/yonsei/session2", "real/yonsei"} == {
      p.rsplit("/", 1)[0] for p in paths if p.startswith("real/yonsei")}
  assert not [p for p in paths if "/." in p or p.endswith(".txt")]


def test_each_folders_groups_are_split_by_the_fractions(manual, module):
  config = module.FolderConfig(name="tiny", frames=FRAMES, **FRACTIONS)
  items = module.folder_items(manual, config)
  partitions = {}
  for item in items:
    folder = "/".join(item.relative.split("/")[:2])
    partitions.setdefault(folder, []).append(faces.parse_split_name(item.split)[0])
  assert {folder: tuple(p.count(partition) for partition in faces.PARTITIONS)
          for folder, p in partitions.items()} == COUNTS
  assert [item.split for item in items] == [
      item.split for item in module.folder_items(manual, config)]
  other_seed = module.folder_items(manual, module.FolderConfig(name="s", seed=1, **FRACTIONS))
  assert [i.split for i in items] != [i.split for i in other_seed]


def test_examples_go_to_their_items_split(built, manual, module):
  _, _, builder = built
  items = module.folder_items(manual, module.FolderConfig(name="tiny", **FRACTIONS))
  split_of = {item.relative: item.split for item in items}
  for split, records in _records(builder).items():
    assert {split_of[r["path"].decode()] for r in records} == {split}
  assert BROKEN in split_of


def test_split_is_the_same_when_built_again_elsewhere(built, manual, tmp_path):
  _, _, builder = built
  out = _build(manual, tmp_path / "data", "--workers=1")
  assert out.returncode == 1, out.stderr[-3000:]
  again = _read(tmp_path / "data")
  assert _partition_of_paths(again) == _partition_of_paths(builder)
  assert {s: i.num_examples for s, i in again.info.splits.items()} == {
      s: i.num_examples for s, i in builder.info.splits.items()}


def test_unreadable_photo_is_a_recorded_skip(built):
  out, data_dir, _ = built
  assert "skipped: 1 (1 error)" in out.stdout and f"{BROKEN}: error" in out.stdout, out.stdout
  assert "train_fake_clips" in out.stdout and "built in" in out.stdout
  metadata = json.loads((prepared_dir(str(data_dir), "face_folder", "tiny")
                         / "metadata.json").read_text())
  skipped = metadata["skipped"]
  assert skipped["count"] == 1 and skipped["by_status"] == {"error": 1}
  [skip] = skipped["listed"]
  assert skip["path"] == BROKEN and skip["frame"] == -1 and skip["status"].startswith("error")
  assert not (prepared_dir(str(data_dir), "face_folder", "tiny") / "skips").exists()


def test_metadata_records_alignment_and_builder_settings(built):
  _, _, builder = built
  metadata = builder.info.metadata
  assert metadata["alignment"]["frames"] == FRAMES and metadata["alignment"]["size"] == 256
  assert metadata["alignment"]["sampling"] == "first"
  assert metadata["alignment"]["detector"] == "hog"
  assert metadata["builder"] == {"size": 256, "frames": FRAMES, "detector": "hog",
                                 "group_file": "", "seed": 0, **FRACTIONS}


def test_built_again_without_overwrite_is_already_prepared(built, manual):
  _, data_dir, _ = built
  files = {p: p.stat().st_mtime_ns for p in data_dir.rglob("*") if p.is_file()}
  out = _build(manual, data_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "face_folder/tiny/1.0.0 is already prepared" in out.stdout, out.stdout
  assert {p: p.stat().st_mtime_ns for p in data_dir.rglob("*") if p.is_file()} == files


def test_overwrite_rebuilds_a_prepared_dataset_from_the_folder_as_it_is_now(tmp_path):
  root, data_dir = tmp_path / "folder", tmp_path / "data"
  _copy(faces_mini("real/yonsei", 2), root / "real" / "yonsei")
  _copy(faces_mini("fake/gan", 2), root / "fake" / "gan")
  config = json.dumps({"name": "all_train", "frames": FRAMES, "train": 1.0, "validation": 0.0})
  assert _build(root, data_dir, config=config).returncode == 0
  _copy(faces_mini("fake/gan", 1, start=2), root / "fake" / "gan")
  out = _build(root, data_dir, "--overwrite", config=config)
  assert out.returncode == 0, out.stderr[-3000:]
  splits = _read(data_dir, "all_train").info.splits
  assert {s: splits[s].num_examples for s in splits} == {"train_real_yonsei": 2,
                                                          "train_fake_gan": 3}


def test_a_split_whose_every_photo_is_skipped_is_left_out_and_the_rest_built(tmp_path):
  root, data_dir = tmp_path / "folder", tmp_path / "data"
  _copy(faces_mini("real/yonsei", 2), root / "real" / "yonsei")
  _copy(faces_mini("fake/gan", 2), root / "fake" / "gan")
  (root / "fake" / "broken").mkdir()
  (root / "fake" / "broken" / "only.jpg").write_text("text, not a JPEG")
  config = json.dumps({"name": "all_train", "frames": FRAMES, "train": 1.0, "validation": 0.0})
  out = _build(root, data_dir, config=config)
  assert out.returncode == 1, out.stderr[-3000:]  # 1: a photo was skipped
  assert "split train_fake_broken left out: every photo and video of it was skipped" in out.stdout
  builder = _read(data_dir, "all_train")
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
      "train_real_yonsei": 2, "train_fake_gan": 2}
  skipped = builder.info.metadata["skipped"]
  assert skipped["empty_splits"] == ["train_fake_broken"] and skipped["count"] == 1
  assert skipped["listed"][0]["path"] == "fake/broken/only.jpg"


def test_group_file_keeps_a_groups_photos_in_one_split(tmp_path):
  root = tmp_path / "folder"
  _copy(faces_mini("real/yonsei", 6), root / "real" / "yonsei")
  _copy(faces_mini("fake/gan", 2), root / "fake" / "gan")
  photos = sorted(p.relative_to(root).as_posix() for p in (root / "real" / "yonsei").iterdir())
  group_of = {photo: f"person{number // 2}" for number, photo in enumerate(photos)}
  (root / "groups.tsv").write_text("".join(f"{p}\t{g}\n" for p, g in group_of.items()))
  config = json.dumps({"name": "grouped", "frames": FRAMES, "group_file": "groups.tsv",
                       **FRACTIONS})
  out = _build(root, tmp_path / "data", "--workers=1", config=config)
  assert out.returncode == 0, out.stderr[-3000:]
  builder = _read(tmp_path / "data", "grouped")
  partition_of = _partition_of_paths(builder)
  assert set(partition_of) == set(photos) | {
      p.relative_to(root).as_posix() for p in (root / "fake" / "gan").iterdir()}
  by_group = {}
  for photo, group in group_of.items():
    by_group.setdefault(group, set()).add(partition_of[photo])
  assert all(len(partitions) == 1 for partitions in by_group.values()), by_group
  # 3 groups: round(1.5) = 2 to train, round(0.75) = 1 to validation, none to test
  assert sorted(p for [p] in by_group.values()) == ["train", "train", "validation"]
  assert builder.info.metadata["builder"]["group_file"] == "groups.tsv"


def _fails(root: Path, data_dir: Path, config: str = CONFIG) -> str:
  """The build's one error line; status 2 and nothing prepared."""
  out = _build(root, data_dir, config=config)
  line = one_line_error(out, PROG)
  assert out.returncode == 2
  assert not list(data_dir.rglob("dataset_info.json"))
  return line


def test_folder_without_fake_is_one_line_naming_it(tmp_path):
  root = tmp_path / "folder"
  _copy(faces_mini("real/yonsei", 1), root / "real" / "yonsei")
  line = _fails(root, tmp_path / "data")
  assert f"{root / 'fake'} has no <method> folders" in line
  assert "real/<source>/* and fake/<method>/*" in line


def test_group_file_naming_absent_paths_is_refused(tmp_path):
  root = tmp_path / "folder"
  _copy(faces_mini("real/yonsei", 1), root / "real" / "yonsei")
  _copy(faces_mini("fake/gan", 1), root / "fake" / "gan")
  (root / "groups.tsv").write_text("real/yonsei/typo.jpg\tperson0\n")
  config = json.dumps({"name": "grouped", "group_file": "groups.tsv"})
  line = _fails(root, tmp_path / "data", config=config)
  assert "groups.tsv names 1 paths that are not photos or videos of the folder: " \
         "real/yonsei/typo.jpg" in line


def test_method_folder_without_photos_or_videos_is_named(tmp_path):
  root = tmp_path / "folder"
  _copy(faces_mini("real/yonsei", 1), root / "real" / "yonsei")
  (root / "fake" / "gan").mkdir(parents=True)
  (root / "fake" / "gan" / "readme.txt").write_text("nothing here")
  line = _fails(root, tmp_path / "data")
  assert f"{root / 'fake' / 'gan'} holds no photos or videos" in line


def test_fractions_over_one_are_refused(tmp_path):
  root = tmp_path / "folder"
  _copy(faces_mini("real/yonsei", 1), root / "real" / "yonsei")
  _copy(faces_mini("fake/gan", 1), root / "fake" / "gan")
  for fractions in ({"train": 0.9, "validation": 0.2}, {"train": 0.5, "validation": -0.1}):
    line = _fails(root, tmp_path / "data", json.dumps({"name": "bad", **fractions}))
    assert "must be fractions that add up to at most 1" in line, line


def test_command_line_mistakes_exit_2(tmp_path):
  out = run_module(PROG, "build", "face_folder", f"--data_dir={tmp_path}")
  assert out.returncode == 2 and "--manual_dir" in one_line_error(out, PROG)
  out = run_module(PROG, "build", "no_such_builder", f"--manual_dir={tmp_path}",
                   f"--data_dir={tmp_path}")
  line = one_line_error(out, PROG)
  assert out.returncode == 2 and "no builder 'no_such_builder'" in line
  assert "face_folder" in line.split("the builders are")[1]
  out = run_module(PROG, "list")
  assert out.returncode == 0 and "face_folder" in out.stdout.split()


def test_padding_is_what_faces_mini_reports_for_each_source(built):
  """faces-mini's README measured the black fraction of aligned faces on 500 photos: Yonsei's
  tight crops 0.34, AMFD's studio portraits 0.004, GAN faces 0.005."""
  _, _, builder = built
  padding = {}
  for records in _records(builder).values():
    for r in records:
      folder = "/".join(r["path"].decode().split("/")[:2])
      padding.setdefault(folder, []).append(float(r["padding"]))
  assert np.mean(padding["real/yonsei"]) > 0.2
  assert np.mean(padding["real/other"]) < 0.05 and np.mean(padding["fake/gan"]) < 0.05
