"""synthetic_faces: the real-vs-generated face sets of Chai et al. (ECCV 2020), aligned.

The sets of the paper's Table I, one config each: real CelebA-HQ against PGAN, StyleGAN and Glow
samples, real CelebA against GMM samples (Table I's CelebA-HQ GMM column), real FFHQ against
PGAN, StyleGAN and StyleGAN2 samples. The manual folder is the ``dataset/faces`` folder of Chai
et al.'s ``patch-forensics`` scripts: one folder per real set and per generator, each holding
``train/``, ``val/`` and ``test/`` folders of images (README.md).
"""

import dataclasses
from pathlib import Path

import tensorflow_datasets as tfds

from agg_jax.datasets import DatasetError, faces
from agg_jax.datasets.builder import FaceBuilder, FaceConfig
from agg_jax.preprocess.images import IMAGE_EXTS

PARTITION_FOLDERS = {"train": "train", "validation": "val", "test": "test"}  # ours -> theirs
ALL = ("train", "validation", "test")
HELD_OUT = ("validation", "test")  # what Chai et al.'s scripts make for the test-only sets
REAL_CELEBAHQ = "celebahq/real-tfr-1024-resized128"
REAL_FFHQ = "ffhq/real-tfr-1024-resized128"
GENERATORS = {"pgan": "PGAN", "sgan": "StyleGAN", "sgan2": "StyleGAN2", "glow": "Glow",
              "gmm": "GMM (MFA)"}


@dataclasses.dataclass
class SyntheticConfig(FaceConfig):
  """real, fake: the folders (relative to the manual folder, "/"-separated) of the real images
  and of the generator's samples, each with train/, val/ and test/ folders; source: the real
  dataset (the generator's training data); method: the generator; partitions: the partitions
  packaged (of train, validation, test; validation is their val/)."""
  real: str = ""
  fake: str = ""
  source: str = ""
  method: str = ""
  partitions: tuple[str, ...] = ALL


def _config(name: str, real: str, fake: str, partitions: tuple[str, ...] = ALL):
  source, method = name.split("_")
  return SyntheticConfig(
      name=name, real=real, fake=fake, source="celeba" if method == "gmm" else source,
      method=method, partitions=partitions,
      description=f"real {real} vs {GENERATORS[method]} samples {fake}: "
                  f"{', '.join(partitions)}")


class Builder(FaceBuilder):
  """Aligned real and generated faces of the synthetic-face sets of Chai et al. (ECCV 2020,
  Table I of the paper): one generator and its real training data per config, with the
  train/validation/test partitions of Chai et al."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  HOMEPAGE = "https://chail.github.io/patch-forensics/"
  CITATION = """@inproceedings{chai2020makes,
  title={What makes fake images detectable? {U}nderstanding properties that generalize},
  author={Chai, Lucy and Bau, David and Lim, Ser-Nam and Isola, Phillip},
  booktitle={European Conference on Computer Vision (ECCV)},
  year={2020}
}"""
  BUILDER_CONFIGS = [
      _config("celebahq_pgan", REAL_CELEBAHQ, "celebahq/pgan-pretrained-128-png"),
      _config("celebahq_sgan", REAL_CELEBAHQ, "celebahq/sgan-pretrained-128-png"),
      _config("celebahq_glow", REAL_CELEBAHQ, "celebahq/glow-pretrained-128-png"),
      _config("celebahq_gmm", "celeba/mfa-real", "celeba/mfa-defaults", HELD_OUT),
      _config("ffhq_pgan", REAL_FFHQ, "ffhq/pgan-9k-128-png", HELD_OUT),
      _config("ffhq_sgan", REAL_FFHQ, "ffhq/sgan-pretrained-128-png", HELD_OUT),
      _config("ffhq_sgan2", REAL_FFHQ, "ffhq/sgan2-pretrained-128-png", HELD_OUT),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  The dataset/faces folder of Chai et al.'s patch-forensics (github.com/chail/patch-forensics):
  their released images, or those their scripts make. Each config reads two of its folders, the
  real images and the generator's samples, each with train/, val/ and test/ folders of images:
    celebahq_pgan   celebahq/real-tfr-1024-resized128  celebahq/pgan-pretrained-128-png
    celebahq_sgan   celebahq/real-tfr-1024-resized128  celebahq/sgan-pretrained-128-png
    celebahq_glow   celebahq/real-tfr-1024-resized128  celebahq/glow-pretrained-128-png
    celebahq_gmm    celeba/mfa-real                    celeba/mfa-defaults
    ffhq_pgan       ffhq/real-tfr-1024-resized128      ffhq/pgan-9k-128-png
    ffhq_sgan       ffhq/real-tfr-1024-resized128      ffhq/sgan-pretrained-128-png
    ffhq_sgan2      ffhq/real-tfr-1024-resized128      ffhq/sgan2-pretrained-128-png
  celebahq_pgan, celebahq_sgan and celebahq_glow package train, val and test; the others val
  and test (what their scripts make). Details and exceptions: the builder's README.md.
  """

  def _split_generators(self, dl_manager):
    return self.face_splits(synthetic_items(Path(dl_manager.manual_dir), self.builder_config))


def synthetic_items(root: Path, config: SyntheticConfig) -> list[faces.Item]:
  """The real and generated images of ``config``'s partitions under ``root``, each assigned to
  its split; a missing folder or an empty partition is a DatasetError."""
  where = f"synthetic_faces/{config.name}"
  unknown = [p for p in config.partitions if p not in PARTITION_FOLDERS]
  if unknown or not config.partitions:
    raise DatasetError(f"{where}: partitions={list(config.partitions)}: name some of "
                       f"{', '.join(PARTITION_FOLDERS)}")
  if not all((config.real, config.fake, config.source, config.method)):
    raise DatasetError(f"{where}: the config needs real, fake, source and method")
  sets = [("real", config.real, f"the real {config.source} images"),
          ("fake", config.fake, f"the {GENERATORS.get(config.method, config.method)} samples")]
  for _, folder, what in sets:  # every folder is checked before any face is aligned
    if not (root / folder).is_dir():
      raise DatasetError(f"{where}: no folder {root / folder}: it holds {what} in "
                         f"{', '.join(PARTITION_FOLDERS[p] + '/' for p in config.partitions)} "
                         "(the layout of Chai et al.'s dataset/faces; see the builder's README)")
  items = []
  for label, folder, what in sets:
    for partition in config.partitions:
      images = _images(root, root / folder / PARTITION_FOLDERS[partition], what, where)
      split = faces.split_name(partition, label, config.method if label == "fake"
                               else config.source)
      items += [faces.Item(path=str(path), relative=path.relative_to(root).as_posix(),
                           split=split, method=config.method if label == "fake" else "real",
                           source=config.source) for path in images]
  return items


def _images(root: Path, folder: Path, what: str, where: str) -> list[Path]:
  """The images under a partition folder (any depth, hidden files left out), sorted."""
  if not folder.is_dir():
    raise DatasetError(f"{where}: no folder {folder}: it holds the {folder.name} partition of "
                       f"{what} (to package fewer partitions, see the builder's README)")
  images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))
  if not images:
    raise DatasetError(f"{where}: {folder} holds no images ({', '.join(sorted(IMAGE_EXTS))}); "
                       f"it should hold the {folder.name} partition of {what}")
  return images
