"""`config.analysis`: what `--mode=analyze` computes. The fields and their defaults:

  rank_by        "energy" (mean |w_i . p_i|, the paper's reading) or "separation" (|fake mean -
                 real mean|): how blocks are ranked on the validation split (importance.py)
  trim_sizes     budgets N of trimming.py (the whole model is always added)
  refit_images   at most this many training images (balanced) give the dropped blocks' means and
                 the refitted regressor
  cam            "score" (Score-CAM, the paper's Figures 5-6) or "grad" (Grad-CAM, cheap)
  cam_maps       Score-CAM sums the channels' "mask"s (default: EfficientNet's block outputs are
                 signed, where the reference's "activation" sum is mostly negative; cam.py)
  cam_layers     CAMs on the top this many blocks of the ranking
  cam_images     images of each class explained, the first ones of the training method's test
                 set
  cam_chunk      masked images per Score-CAM forward pass (memory bound)

A run trained before these fields existed is analysed with the defaults. They say how a run is
analysed, not what it trained, so a command on a saved run may change them
(run.EXECUTION_FIELDS).
"""

import ml_collections

from agg_jax.config_validation import require

RANKINGS = ("energy", "separation")
CAMS = ("score", "grad")
CAM_MAPS = ("mask", "activation")  # cam.MAPS, without importing JAX


def defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "rank_by": "energy", "trim_sizes": (1, 3, 5, 10, 20), "refit_images": 2000,
      "cam": "score", "cam_maps": "mask", "cam_layers": 2, "cam_images": 1, "cam_chunk": 32})


def of(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The analysis settings of a run's config: its `analysis` fields over the defaults."""
  settings = defaults()
  settings.update(dict(config.get("analysis") or {}))
  return settings


def _positive(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first `config.analysis` field that cannot work."""
  given = config.get("analysis") or {}
  unknown = sorted(set(given) - set(defaults()))
  require(not unknown, "analysis", dict(given), f"unknown field(s) {unknown}; known: "
          f"{', '.join(defaults())}")
  settings = of(config)
  require(settings.rank_by in RANKINGS, "analysis.rank_by", settings.rank_by,
          f"use one of {RANKINGS}")
  sizes = settings.trim_sizes
  require(isinstance(sizes, (list, tuple)) and all(map(_positive, sizes)),
          "analysis.trim_sizes", sizes, "must be a tuple of block counts > 0, e.g. (1, 3, 20)")
  require(settings.cam in CAMS, "analysis.cam", settings.cam, f"use one of {CAMS}")
  require(settings.cam_maps in CAM_MAPS, "analysis.cam_maps", settings.cam_maps,
          f"use one of {CAM_MAPS}")
  for key in ("refit_images", "cam_layers", "cam_images", "cam_chunk"):
    require(_positive(settings[key]), f"analysis.{key}", settings[key],
            "must be a whole number > 0")
