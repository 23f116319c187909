"""`--mode=export`: a trained run as a self-contained detector folder, RUN/export/.

The folder's layout and its loader are in exported.py (jax and numpy only). This module writes
it from the run directory alone: the best checkpoint's variables (no optimizer state), the model
config, the input contract (the model's side, uint8 RGB in [0, 255], the face alignment of the
training data), a decision threshold chosen on the validation split, the aggregated blocks and
their ranking (from RUN/analysis when the run was analysed, else made here on the validation
split as importance.py does), and two serialized `jax.export` modules with a symbolic batch
size: the probability of fake, and Grad-CAM maps of the top-ranked blocks. `--trimmed=N` also
writes export/trimmed_N/, the same folder for the analysis's masked top-N model.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from safetensors.numpy import save as safetensors_bytes
from sklearn.metrics import roc_curve

from agg_jax import data, evaluate, exported, fileio, models, run, sharding
from agg_jax.models import cpu_kernels
from agg_jax.preprocess.aligner import Settings

EXPORT = "export"
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
CAM_LAYERS = 2


def export_dir(workdir) -> epath.Path:
  return fileio.path(workdir) / EXPORT


def choose_threshold(labels: np.ndarray, probabilities: np.ndarray) -> dict:
  """The probability threshold that maximises TPR - FPR (Youden's J) on labelled scores: the
  middle of the interval of thresholds that reach it (between the lowest score labelled fake
  and the highest one below it), with the rates it gives there."""
  fpr, tpr, thresholds = roc_curve(labels, probabilities)
  finite = np.isfinite(thresholds)  # the first threshold (inf) labels nothing fake
  best = int(np.argmax(np.where(finite, tpr - fpr, -np.inf)))
  lowest_fake = float(thresholds[best])
  below = probabilities[probabilities < lowest_fake]
  value = (lowest_fake + float(below.max() if below.size else 0.0)) / 2
  predicted = probabilities >= value
  return {"value": value, "rule": "maximises TPR - FPR (Youden's J) on the validation split; "
          "the middle of the thresholds that do", "validation_images": int(len(labels)),
          "tpr": float(tpr[best]), "fpr": float(fpr[best]),
          "accuracy": float((predicted == labels.astype(bool)).mean())}


def crop_of(config) -> float:
  """The central fraction of the aligned face the model reads (`data.crop`; 1.0 without it)."""
  return float(config.data.get("crop", 1.0))


def alignment_of(config) -> tuple[dict, str]:
  """The face alignment of the run's training data, and where it comes from."""
  if config.data.source == "tfds":
    from agg_jax.data import tfds_source  # pylint: disable=import-outside-toplevel
    prepared = tfds_source.Prepared(config.data.data_dir, config.data.dataset)
    return (dict(prepared.builder.info.metadata["alignment"]),
            f"the prepared dataset {config.data.dataset}")
  return (Settings().key(), f"agg_jax.preprocess defaults (the {config.data.source!r} source "
          "holds no aligned faces)")


def ranking_of(workdir, model, variables, validation, batch_size, mesh) -> tuple[list, str]:
  """Block names, most important first: RUN/analysis's ranking, else made on the validation
  split by energy (importance.py); [] for a model without the aggregation head."""
  if not hasattr(model, "windows"):
    return [], "none: the model has no aggregation head"
  summary = fileio.path(workdir) / "analysis" / "summary.json"
  if summary.is_file():
    saved = json.loads(summary.read_text())
    return list(saved["ranking"]), f"RUN/analysis (by {saved['settings']['rank_by']})"
  from agg_jax.analysis import importance  # pylint: disable=import-outside-toplevel
  forward = importance.make_forward_fn(model, mesh)
  inputs = importance.collect(forward, variables, validation, batch_size, mesh)
  kernel = np.asarray(variables["params"]["head"]["aggregate"]["kernel"])
  contrib = importance.contributions(inputs.primitives, kernel)
  blocks = list(model.windows)
  return ([blocks[i] for i in importance.rank_blocks(contrib, inputs.labels)],
          "the validation split (by energy), at export")


def serialize(function, variables, side: int, platforms) -> bytes:
  """`jax.export` of function(variables, images) for uint8 images (b, side, side, 3), any b."""
  images = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {side}, {side}, 3"), jnp.uint8)
  shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), variables)
  # Grad-CAM's gradient goes through the depthwise layers' backward pass: XLA's form, since a
  # serialised program cannot call the C++ kernels built on this machine.
  with cpu_kernels.suspended():
    return bytes(jax.export.export(jax.jit(function), platforms=tuple(platforms))(
        shapes, images).serialize())


def write_folder(folder: epath.Path, model, variables, info: dict, platforms) -> None:
  """One export folder (layout in exported.py). A local folder is replaced only when the new one
  is complete, so a failed export never leaves half a folder; on object storage, where folders
  cannot be renamed at once, the old model.json is removed first and the new one written last
  (exported.load refuses a folder without it)."""
  from agg_jax.analysis import cam  # pylint: disable=import-outside-toplevel
  side = info["input"]["image_size"]
  variables = jax.tree.map(np.asarray, {k: v for k, v in variables.items()
                                        if k in ("params", "batch_stats")})

  def probabilities(v, images):
    logits, _ = model.apply(v, images, train=False)
    return jax.nn.sigmoid(logits)

  local = fileio.is_local(folder)
  if local:
    staging = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
  else:
    staging = folder
    (folder / exported.MODEL_JSON).unlink(missing_ok=True)
  fileio.atomic_write_bytes(staging / exported.VARIABLES,
                            safetensors_bytes(exported.flatten(variables)))
  fileio.atomic_write_bytes(staging / exported.DETECTOR,
                            serialize(probabilities, variables, side, platforms))
  if info["cam_layers"]:
    layers = info["cam_layers"]
    fileio.atomic_write_bytes(staging / exported.CAM, serialize(
        lambda v, images: cam.grad_cam_maps(model, v, images, layers), variables, side,
        platforms))
  fileio.atomic_write_text(staging / exported.MODEL_JSON, json.dumps(info, indent=2) + "\n")
  if local:
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)


def export_run(config, workdir, platforms=("cpu",), trimmed: int | None = None) -> epath.Path:
  """Writes RUN/export (and RUN/export/trimmed_N with `trimmed`); returns the folder."""
  unknown = [p for p in platforms if p not in PLATFORMS]
  if unknown or not platforms:
    raise run.RunError(f"--platforms={','.join(platforms)}: use some of {', '.join(PLATFORMS)}")
  trimmed_entry = trimmed_from_analysis(workdir, trimmed) if trimmed else None
  mesh = sharding.make_mesh(config.mesh)
  model, variables = run.restore_best(workdir, config, mesh)
  dataset = data.load(config.data)
  batch_size = config.train.eval_batch_size
  predict = evaluate.make_predict_fn(model, mesh)
  validation = evaluate.score_split(predict, variables, dataset.validation, batch_size, mesh)
  threshold = choose_threshold(dataset.validation.labels, validation)
  ranking, ranking_source = ranking_of(workdir, model, variables, dataset.validation,
                                       batch_size, mesh)
  alignment, alignment_source = alignment_of(config)
  info = {
      "format": exported.FORMAT, "format_version": exported.FORMAT_VERSION,
      "run": str(workdir), "model": config.model.to_dict(), "train_set": dataset.train_set,
      "input": {"image_size": int(data.image_shape(config.data)[0]), "dtype": "uint8",
                "channels": "RGB", "range": [0, 255], "alignment": alignment,
                "alignment_source": alignment_source, "crop": crop_of(config),
                "resize": "the central crop (fraction of the aligned face's side) resized to "
                          "image_size with OpenCV INTER_AREA"},
      "threshold": threshold,
      "blocks": list(getattr(model, "windows", {})), "ranking": ranking,
      "ranking_source": ranking_source, "cam_layers": ranking[:CAM_LAYERS],
      "platforms": list(platforms),
      "params": models.param_counts(variables["params"])}
  folder = export_dir(workdir)
  if jax.process_index() == 0:
    write_folder(folder, model, variables, info, platforms)
    if trimmed_entry:
      export_trimmed(config, folder, variables, info, trimmed_entry, platforms,
                     dataset.validation, mesh)
    print(f"exported to {folder}: threshold {threshold['value']:.4f} ({threshold['rule']}), "
          f"platforms {', '.join(platforms)}", flush=True)
  return folder


def trimmed_from_analysis(workdir, size: int) -> dict:
  """The masked top-`size` regressor of RUN/analysis/trimming.json, with the block names."""
  saved_path = fileio.path(workdir) / "analysis" / "trimming.json"
  if not saved_path.is_file():
    raise run.RunError(f"--trimmed={size}: {saved_path} is missing; run --mode=analyze first")
  saved = json.loads(saved_path.read_text())
  entry = next((t for t in saved["trimmed"] if t["size"] == size and t["variant"] == "masked"),
               None)
  if entry is None:
    have = sorted({t["size"] for t in saved["trimmed"]})
    raise run.RunError(f"--trimmed={size}: the analysis has no top-{size} model (it has {have})")
  return {**entry, "names": [saved["blocks"][i] for i in entry["blocks"]]}


def export_trimmed(config, folder, variables, info, entry, platforms, validation, mesh) -> None:
  """export/trimmed_N: the masked top-N model of the analysis, with its own threshold on the
  validation split."""
  from agg_jax.analysis import trimming  # pylint: disable=import-outside-toplevel
  size = entry["size"]
  trimmed = trimming.Trimmed.from_json(entry)
  small = models.from_config(trimming.model_config(config.model, trimmed))
  side = info["input"]["image_size"]
  images = jnp.zeros((1, side, side, 3), jnp.uint8)
  small_variables = trimming.trimmed_variables(small, jax.tree.map(np.asarray, variables),
                                               trimmed, images)
  kept = entry["names"]
  scores = evaluate.score_split(evaluate.make_predict_fn(small, mesh), small_variables,
                                validation, config.train.eval_batch_size, mesh)
  small_info = {**info, "model": trimming.model_config(config.model, trimmed).to_dict(),
                "threshold": choose_threshold(validation.labels, scores), "blocks": kept,
                "trimmed": {"size": size, "variant": "masked"},
                "ranking": [b for b in info["ranking"] if b in kept],
                "cam_layers": [b for b in info["ranking"] if b in kept][:CAM_LAYERS],
                "params": models.param_counts(small_variables["params"])}
  write_folder(folder / f"trimmed_{size}", small, small_variables, small_info, platforms)
