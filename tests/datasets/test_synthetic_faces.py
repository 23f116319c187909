"""The synthetic_faces builder on a miniature of Chai et al.'s dataset/faces layout: faces-mini
photos as 128 px PNGs, built through the build command and read back as a user reads them."""

import json
import shutil

import cv2
import pytest

from agg_jax.datasets import faces, prepared_dir
from tests.helpers import faces_mini, one_line_error, requires_faces_mini, run_module

pytestmark = requires_faces_mini

PROG = "agg_jax.datasets"
PER_PARTITION = 2
CELEBAHQ_REAL = "celebahq/real-tfr-1024-resized128"
CELEBAHQ_PGAN = "celebahq/pgan-pretrained-128-png"
FFHQ_REAL = "ffhq/real-tfr-1024-resized128"
FFHQ_SGAN2 = "ffhq/sgan2-pretrained-128-png"


def _write_pngs(folder, photos: list[str], size: int = 128) -> None:
  """Each photo centre-cropped square and resized to ``size`` px, as a PNG in ``folder``."""
  folder.mkdir(parents=True, exist_ok=True)
  for number, photo in enumerate(photos):
    bgr = cv2.imread(photo)
    side = min(bgr.shape[:2])
    top, left = (bgr.shape[0] - side) // 2, (bgr.shape[1] - side) // 2
    square = bgr[top:top + side, left:left + side]
    cv2.imwrite(str(folder / f"{number:06d}.png"),
                cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA))


def _write_set(root, folder: str, faces_mini_folder: str, partitions: list[str], start: int):
  """A real set's or generator's folder with PER_PARTITION images in each partition folder."""
  for number, partition in enumerate(partitions):
    _write_pngs(root / folder / partition,
                faces_mini(faces_mini_folder, PER_PARTITION, start + number * PER_PARTITION))


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
  """Their layout: CelebA-HQ real vs PGAN (train/val/test), FFHQ real vs StyleGAN2 (val/test),
  with files the builder ignores (their file-list caches, Glow's manipulations.npz) and one
  unreadable PGAN sample."""
  root = tmp_path_factory.mktemp("faces")
  _write_set(root, CELEBAHQ_REAL, "real/yonsei", ["train", "val", "test"], start=0)
  _write_set(root, CELEBAHQ_PGAN, "fake/gan", ["train", "val", "test"], start=0)
  _write_set(root, FFHQ_REAL, "real/yonsei", ["train", "val", "test"], start=20)
  _write_set(root, FFHQ_SGAN2, "fake/sd21", ["val", "test"], start=0)
  (root / CELEBAHQ_PGAN / "test.txt").write_text("pgan-pretrained-128-png/test/000000.png\n")
  (root / CELEBAHQ_PGAN / "train" / "manipulations.npz").write_bytes(b"not an image")
  (root / CELEBAHQ_PGAN / "test" / "broken.png").write_bytes(b"not a png")
  return root


def _build(manual_dir, data_dir, config: str):
  return run_module(PROG, "build", "synthetic_faces", f"--manual_dir={manual_dir}",
                    f"--data_dir={data_dir}", f"--config={config}", "--workers=1")


@pytest.fixture(scope="module")
def built(manual, tmp_path_factory):
  """The data_dir with celebahq_pgan and ffhq_sgan2 built, and each build's output."""
  data_dir = tmp_path_factory.mktemp("data")
  outs = {config: _build(manual, data_dir, config) for config in ("celebahq_pgan", "ffhq_sgan2")}
  return data_dir, outs


def _read(data_dir, config: str):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return tfds.builder_from_directory(str(prepared_dir(str(data_dir), "synthetic_faces", config)))


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def test_celebahq_pgan_splits_and_examples(built):
  data_dir, outs = built
  out = outs["celebahq_pgan"]
  assert out.returncode == 1, out.stderr[-3000:]  # the broken sample is a skip, not a failure
  assert "skipped: 1" in out.stdout and "broken.png" in out.stdout, out.stdout
  builder = _read(data_dir, "celebahq_pgan")
  expected = {f"{p}_{label}": PER_PARTITION for p in faces.PARTITIONS
              for label in ("real_celebahq", "fake_pgan")}
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == expected
  for split in expected:
    partition, label, _ = faces.parse_split_name(split)
    folder = {"train": "train", "validation": "val", "test": "test"}[partition]
    source = builder.as_data_source(split)
    for example in (source[i] for i in range(len(source))):
      assert example["label"] == faces.LABELS.index(label)
      assert _text(example["method"]) == ("real" if label == "real" else "pgan")
      assert _text(example["source"]) == "celebahq"
      path = _text(example["path"])
      assert path.startswith(f"{CELEBAHQ_REAL if label == 'real' else CELEBAHQ_PGAN}/{folder}/")
      assert path.endswith(".png") and example["frame"] == -1
      assert faces.decode_png(example["image"]).shape == (256, 256, 3)


def test_metadata_records_settings_and_skips(built):
  data_dir, _ = built
  metadata = json.loads((prepared_dir(str(data_dir), "synthetic_faces", "celebahq_pgan")
                         / "metadata.json").read_text())
  assert metadata["alignment"]["size"] == 256 and metadata["alignment"]["detector"] == "hog"
  assert metadata["builder"]["real"] == CELEBAHQ_REAL
  assert metadata["builder"]["fake"] == CELEBAHQ_PGAN
  assert (metadata["builder"]["source"], metadata["builder"]["method"]) == ("celebahq", "pgan")
  assert list(metadata["builder"]["partitions"]) == list(faces.PARTITIONS)
  assert metadata["skipped"]["count"] == 1
  assert metadata["skipped"]["listed"][0]["path"] == f"{CELEBAHQ_PGAN}/test/broken.png"


def test_ffhq_sgan2_has_validation_and_test_only(built):
  data_dir, outs = built
  assert outs["ffhq_sgan2"].returncode == 0, outs["ffhq_sgan2"].stderr[-3000:]
  builder = _read(data_dir, "ffhq_sgan2")
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      f"{p}_{label}": PER_PARTITION for p in ("validation", "test")
      for label in ("real_ffhq", "fake_sgan2")}
  example = builder.as_data_source("test_fake_sgan2")[0]
  assert (_text(example["method"]), _text(example["source"]), example["label"]) == (
      "sgan2", "ffhq", 1)
  assert faces.decode_png(example["image"]).shape == (256, 256, 3)


def test_missing_folder_is_one_line_naming_it(manual, tmp_path):
  out = _build(manual, tmp_path / "data", "celebahq_glow")
  assert out.returncode == 2
  line = one_line_error(out, PROG)
  assert str(manual / "celebahq/glow-pretrained-128-png") in line
  assert "Glow samples" in line and "train/, val/, test/" in line


def test_empty_or_missing_partition_is_an_error(manual, tmp_path):
  root = tmp_path / "faces"
  shutil.copytree(manual / "ffhq", root / "ffhq")
  for child in (root / FFHQ_SGAN2 / "val").iterdir():
    child.unlink()
  out = _build(root, tmp_path / "data", "ffhq_sgan2")
  assert out.returncode == 2
  assert f"{root / FFHQ_SGAN2 / 'val'} holds no images" in one_line_error(out, PROG)
  (root / FFHQ_SGAN2 / "val").rmdir()
  out = _build(root, tmp_path / "data", "ffhq_sgan2")
  assert out.returncode == 2
  assert f"no folder {root / FFHQ_SGAN2 / 'val'}" in one_line_error(out, PROG)
