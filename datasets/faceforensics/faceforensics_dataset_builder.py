"""faceforensics: aligned faces of FaceForensics++ (Rossler et al., ICCV 2019), official splits.

The manual folder is laid out as the official download script leaves it. Each split file lists
[target, source] pairs; a pair puts its two original videos and its two fakes (``a_b``, ``b_a``)
of every method in that partition, so no identity crosses partitions. Videos that no split file
names are left out.
"""

import dataclasses
import json
from pathlib import Path

import tensorflow_datasets as tfds

from agg_jax.datasets import DatasetError, faces
from agg_jax.datasets.builder import FaceBuilder, FaceConfig

COMPRESSIONS = ("c23", "c0", "c40")  # c23 (HQ) first: the default
METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
REAL_SOURCE = "youtube"
SPLIT_FILES = {"train": "train.json", "validation": "val.json", "test": "test.json"}
LISTED_MISSING = 5  # absent videos named in the error


@dataclasses.dataclass
class ForensicsConfig(FaceConfig):
  """compression: c0 (raw), c23 (HQ) or c40 (LQ); by default the config's name. A custom
  config (other frames, say) sets it: TFDS refuses a custom config named like a listed one."""
  compression: str = ""

  def __post_init__(self):
    self.compression = self.compression or self.name
    if self.compression not in COMPRESSIONS:
      raise ValueError(f"config {self.name!r}: compression {self.compression!r} is not one of "
                       f"{', '.join(COMPRESSIONS)}")


class Builder(FaceBuilder):
  """Aligned faces of FaceForensics++: the YouTube originals and their Deepfakes, Face2Face,
  FaceSwap and NeuralTextures fakes at one compression, the first frames of each video, in the
  official train/validation/test splits."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  USES_BEAM = True
  BUILDER_CONFIGS = [ForensicsConfig(name=c, description=f"videos compressed at {c}")
                     for c in COMPRESSIONS]
  HOMEPAGE = "https://github.com/ondyari/FaceForensics"
  CITATION = (Path(__file__).parent / "CITATIONS.bib").read_text()
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  FaceForensics++ as its official download script leaves it (access by request, see the
  homepage), for the compression of the config (c23 below), with the official split files:
    original_sequences/youtube/c23/videos/000.mp4 ...
    manipulated_sequences/<Deepfakes|Face2Face|FaceSwap|NeuralTextures>/c23/videos/000_003.mp4
    splits/train.json, splits/val.json, splits/test.json  ([["071", "054"], ...] pairs)
  """

  def _split_generators(self, dl_manager):
    return self.face_splits(forensics_items(_manual_root(dl_manager),
                                            self.builder_config.compression))


def _manual_root(dl_manager) -> Path:
  try:
    return Path(dl_manager.manual_dir)
  except AssertionError:  # tfds: missing or empty
    raise DatasetError(
        f"faceforensics: the manual folder {getattr(dl_manager, '_manual_dir', '')} is missing "
        "or empty; it holds original_sequences/, manipulated_sequences/ and splits/") from None


def forensics_items(root: Path, compression: str) -> list[faces.Item]:
  """The videos that the split files of ``root`` name, each assigned to its split."""
  pairs = read_splits(root)
  items, missing = [], []
  for method, folder in video_folders(root, compression).items():
    label = "real" if method == "real" else "fake"
    for name, partition in video_names(pairs, label):
      path = folder / f"{name}.mp4"
      relative = path.relative_to(root).as_posix()
      if not path.is_file():
        missing.append(relative)
        continue
      items.append(faces.Item(
          path=str(path), relative=relative,
          split=faces.split_name(partition, label, REAL_SOURCE if label == "real" else method),
          method=method, source=REAL_SOURCE, kind="video", compression=compression))
  if missing:
    listed = ", ".join(missing[:LISTED_MISSING]) + (", ..." if len(missing) > LISTED_MISSING
                                                     else "")
    raise DatasetError(f"faceforensics: {len(missing)} videos that the split files name are "
                       f"not in {root}: {listed}")
  return items


def video_names(pairs: list[tuple[str, str, str]], label: str) -> list[tuple[str, str]]:
  """(video name, partition) of the originals (``a``, ``b``) or of one method's fakes
  (``a_b``, ``b_a``) of each (a, b, partition)."""
  if label == "real":
    names = {(v, partition) for a, b, partition in pairs for v in (a, b)}
  else:
    names = {(f"{x}_{y}", partition) for a, b, partition in pairs for x, y in ((a, b), (b, a))}
  return sorted(names)


def video_folders(root: Path, compression: str) -> dict[str, Path]:
  """The videos folder of the originals ("real") and of each method; all must exist."""
  folders = {"real": root / "original_sequences" / REAL_SOURCE / compression / "videos"}
  folders.update({m: root / "manipulated_sequences" / m / compression / "videos"
                  for m in METHODS})
  absent = [f.relative_to(root).as_posix() for f in folders.values() if not f.is_dir()]
  if absent:
    found = [c for c in COMPRESSIONS if c != compression and any(
        (f.parents[1] / c / "videos").is_dir() for f in folders.values())]
    raise DatasetError(f"faceforensics: {root} lacks {len(absent)} of the {len(folders)} video "
                       f"folders of {compression} (the originals and every method): "
                       f"{', '.join(absent)}" + (f"; it has {' and '.join(found)} videos (the "
                                                 "configs of those names)" if found else ""))
  return folders


def read_splits(root: Path) -> list[tuple[str, str, str]]:
  """(target, source, partition) of each pair of the official split files; a video in two
  partitions is an error."""
  pairs, partition_of = [], {}
  for partition, file_name in SPLIT_FILES.items():
    for a, b in _read_pairs(root / "splits" / file_name):
      for video in (a, b):
        other = partition_of.setdefault(video, partition)
        if other != partition:
          raise DatasetError(f"faceforensics: video {video} is in both the {other} and the "
                             f"{partition} split files; an identity belongs to one partition")
      pairs.append((a, b, partition))
  return pairs


def _read_pairs(path: Path) -> list[tuple[str, str]]:
  if not path.is_file():
    raise DatasetError(f"faceforensics: no split file {path} (the official "
                       f"{'/'.join(SPLIT_FILES.values())} belong in {path.parent})")
  try:
    pairs = json.loads(path.read_text())
  except ValueError as e:
    raise DatasetError(f"faceforensics: {path} is not JSON ({e})") from None
  if not isinstance(pairs, list) or not all(
      isinstance(p, list) and len(p) == 2 and all(isinstance(v, str) and v for v in p)
      and p[0] != p[1] for p in pairs):
    raise DatasetError(f"faceforensics: {path} is not a JSON list of [target, source] pairs "
                       'of two video names, like [["071", "054"], ...]')
  return [tuple(p) for p in pairs]
