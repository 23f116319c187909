"""Face preprocessing (paper Sec. III-A, IV-A): videos and photos -> aligned 256x256 faces.

One job per module:
  frames       first N (paper: 100) or N uniformly spread frames of a video (OpenCV)
  images       still images to RGB, with guards against bad files and decompression bombs
  detect       dlib face detection (HOG, or CNN), largest face, tracking in videos
  landmarks    dlib 68-point landmarks; the eye centres ("center of mass")
  quality      plausibility checks of a landmark fit (the manifest's ``quality``)
  dlib_models  where dlib's model files are found
  align        the margin crop and the similarity warp: the left eye lands on a fixed point
  smooth       temporal smoothing of the alignment in videos
  aligner      photos and video frames to aligned faces in memory (``Aligner``, ``AlignedFace``)
  sources      discovering inputs, output paths that mirror the input tree
  manifest     manifest.jsonl, atomic writes, resuming
  pipeline     one source to PNGs and manifest records
  runner       many sources: worker processes, progress, summary
  beam         the same, as an Apache Beam pipeline (optional)

The alignment convention is documented in ``align``. In memory: ``Aligner(Settings()).image(rgb)``
(or ``.video(frames)``, ``.file(path)``). Command line: ``python -m agg_jax.preprocess --help``.
"""

from agg_jax.preprocess.align import TEMPLATE, matrix, pose, template, warp
from agg_jax.preprocess.aligner import AlignedFace, Aligner, Settings
from agg_jax.preprocess.pipeline import Processor
from agg_jax.preprocess.runner import run

__all__ = ["TEMPLATE", "matrix", "pose", "template", "warp", "AlignedFace", "Aligner", "Settings",
           "Processor", "run"]
