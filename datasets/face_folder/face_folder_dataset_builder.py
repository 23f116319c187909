"""face_folder: aligned faces of any folder of real and fake photos and videos."""

import dataclasses
import hashlib
from pathlib import Path

import tensorflow_datasets as tfds

from agg_jax.datasets import DatasetError, faces
from agg_jax.datasets.builder import FaceBuilder, FaceConfig
from agg_jax.preprocess.sources import kind_of
from agg_jax.preprocess.frames import VIDEO_EXTS
from agg_jax.preprocess.images import IMAGE_EXTS


@dataclasses.dataclass
class FolderConfig(FaceConfig):
  """train, validation: the fractions of each source's and method's groups in those splits (the
  rest is test); group_file: a file in the manual folder whose lines are ``<path>\\t<group>``
  (paths as below), keeping each group in one split (default: each photo, and each video with
  all its frames, is its own group); seed: of the deterministic assignment."""
  train: float = 0.7
  validation: float = 0.1
  group_file: str = ""
  seed: int = 0


class Builder(FaceBuilder):
  """Aligned faces of a folder laid out as real/<source>/* and fake/<method>/* (photos and
  videos, any depth below), split deterministically by group."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [FolderConfig(name="default", description="70/10/20 by photo or video")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  A folder with real/<source>/ and fake/<method>/ folders of photos and videos, e.g.
  real/yonsei/*.jpg, fake/gan/*.jpg, fake/deepfakes/clip.mp4 (the layout of faces-mini).
  """

  def _split_generators(self, dl_manager):
    return self.face_splits(folder_items(Path(dl_manager.manual_dir), self.builder_config))


def folder_items(root: Path, config: FolderConfig) -> list[faces.Item]:
  """Every photo and video under ``root``'s real/<source>/ and fake/<method>/ folders, each
  assigned to its split."""
  if not (0 <= config.train and 0 <= config.validation
          and config.train + config.validation <= 1):
    raise DatasetError(f"face_folder: train={config.train} and validation={config.validation} "
                       "must be fractions that add up to at most 1")
  groups = _group_file(root, config.group_file) if config.group_file else {}
  items = []
  for label in faces.LABELS:
    folders = sorted(p for p in (root / label).glob("*") if p.is_dir()) if (
        root / label).is_dir() else []
    if not folders:
      kind = "source" if label == "real" else "method"
      raise DatasetError(f"face_folder: {root / label} has no <{kind}> "
                         f"folders; the manual folder is laid out as real/<source>/* and "
                         f"fake/<method>/*")
    for folder in folders:
      files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not any(
          part.startswith(".") for part in p.relative_to(root).parts)
          and p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS]
      if not files:
        raise DatasetError(f"face_folder: {folder} holds no photos or videos")
      relative = [p.relative_to(root).as_posix() for p in files]
      split_of = _assign([groups.get(r, r) for r in relative], config)
      for path, rel in zip(files, relative):
        name = folder.name
        items.append(faces.Item(
            path=str(path), relative=rel,
            split=faces.split_name(split_of[groups.get(rel, rel)], label, name),
            method="real" if label == "real" else name, source=name,
            kind=kind_of(path)[0]))
  unknown = sorted(set(groups) - {item.relative for item in items})
  if unknown:
    raise DatasetError(f"face_folder: {config.group_file} names {len(unknown)} paths that are "
                       f"not photos or videos of the folder: {', '.join(unknown[:5])}"
                       + (", ..." if len(unknown) > 5 else ""))
  return items


def _group_file(root: Path, name: str) -> dict[str, str]:
  path = root / name
  if not path.is_file():
    raise DatasetError(f"face_folder: group_file {path} does not exist")
  groups = {}
  for number, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    fields = line.split("\t")
    if len(fields) != 2:
      raise DatasetError(f"face_folder: {path} line {number}: expected <path>\\t<group>")
    groups[fields[0]] = fields[1]
  return groups


def _assign(groups: list[str], config: FolderConfig) -> dict[str, str]:
  """Partition of each distinct group: groups ordered by a seeded hash, the first
  round(n * train) to train, the next round(n * validation) to validation, the rest to test."""
  distinct = sorted(set(groups), key=lambda g: hashlib.sha1(f"{config.seed}:{g}".encode())
                    .hexdigest())
  n = len(distinct)
  n_train = round(n * config.train)
  n_val = round(n * config.validation)
  return {g: "train" if i < n_train else "validation" if i < n_train + n_val else "test"
          for i, g in enumerate(distinct)}
