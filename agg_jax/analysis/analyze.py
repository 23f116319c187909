"""`--mode=analyze`: every analysis of a trained run, written to RUN/analysis/.

  importance.csv, importance.png       w_i . p_i per block on each test set (Figure 4) and the
                                       ranking, made on the validation split
  trimming.csv, trimming_summary.csv   AP of the top-N models per test set; AP_deg (eq. 5),
                                       parameter counts, forward time and speed-up per N
  trimming.json                        the ranking and every trimmed regressor (kept blocks,
                                       kernel, bias): a trimmed model is rebuilt from it and
                                       the best checkpoint (trimming.trimmed_variables)
  trimming_*.png                       Figures 7 and 8
  cam_score.png, cam_grad.png          CAMs on the top blocks for real and fake images
                                       (Figures 5 and 6)
  summary.json, report.html            the figures of the run in one file, and one page

Only the run directory is read: the model from its config and best checkpoint, the images from
its data source (validation, a sample of training images, the test sets).
"""

import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from tqdm import tqdm

from agg_jax import data, fileio, models, run, sharding
from agg_jax.analysis import cam, importance, report, settings as settings_lib, trimming
from agg_jax.data import FAKE, REAL

ANALYSIS = "analysis"
PAPER = {"analysis_params": 16e6, "best_one": 0.32e6, "best_three": 1e6}  # section V


def analysis_dir(workdir) -> epath.Path:
  return fileio.path(workdir) / ANALYSIS


def training_sample(split, count: int, seed: int) -> np.ndarray:
  """Rows of at most `count` training images, half real and half fake where there are enough."""
  rng = np.random.default_rng(seed)
  rows = []
  for label in (REAL, FAKE):
    candidates = np.flatnonzero(split.labels == label)
    rows.append(rng.permutation(candidates)[:count // 2])
  return np.sort(np.concatenate(rows))


@dataclasses.dataclass
class Timer:
  """Wall time of each stage, for the report."""
  seconds: dict = dataclasses.field(default_factory=dict)

  def stage(self, name: str, start: float) -> None:
    self.seconds[name] = round(time.perf_counter() - start, 2)


def analyze_run(config, workdir) -> dict:
  """Runs every analysis on the run in `workdir` and writes `workdir/analysis/`."""
  if config.model.head != "aggregation":
    raise run.RunError(f"--mode=analyze: the run in {workdir} has model.head="
                       f"{config.model.head!r}; the analyses read the aggregation head's "
                       "primitives (model.head='aggregation')")
  settings = settings_lib.of(config)
  out = analysis_dir(workdir)
  timer, started = Timer(), time.perf_counter()
  mesh = sharding.make_mesh(config.mesh)
  model, variables = run.restore_best(workdir, config, mesh)
  dataset = data.load(config.data)
  blocks = list(model.windows)
  aggregate = variables["params"]["head"]["aggregate"]
  kernel, bias = np.asarray(aggregate["kernel"]), float(aggregate["bias"][0])
  forward = importance.make_forward_fn(model, mesh)
  batch_size = config.train.eval_batch_size

  start = time.perf_counter()
  sample = training_sample(dataset.train, settings.refit_images, config.seed)
  splits = {"validation": (dataset.validation, None), "training sample": (dataset.train, sample),
            **{name: (split, None) for name, split in dataset.test.items()}}
  total = sum(len(split) if rows is None else len(rows) for split, rows in splits.values())
  inputs = {}
  with tqdm(total=total, desc="primitives", unit="image") as bar:
    for name, (split, rows) in splits.items():
      inputs[name] = importance.collect(forward, variables, split, batch_size, mesh, rows,
                                        progress=bar.update)
  tests = {name: inputs[name] for name in dataset.test}
  timer.stage("primitives", start)

  start = time.perf_counter()
  validation = inputs["validation"]
  val_contrib = importance.contributions(validation.primitives, kernel)
  ranking = importance.rank_blocks(val_contrib, validation.labels, settings.rank_by)
  ranking_scores = importance.block_scores(val_contrib, validation.labels, settings.rank_by)
  if jax.process_index() == 0:
    importance.write_csv(out / "importance.csv", blocks, tests, kernel, ranking, ranking_scores)
    importance.chart(out / "importance.png", blocks, tests, kernel)
  timer.stage("importance", start)

  start = time.perf_counter()
  trims = trim_all(config, settings, model, variables, ranking, kernel, bias,
                   inputs["training sample"], tests, dataset.train_set, blocks, batch_size)
  if jax.process_index() == 0:
    write_trimming(out, trims, ranking, blocks, settings.rank_by)
  timer.stage("trimming", start)

  start = time.perf_counter()
  cam_set = dataset.train_set if dataset.train_set in dataset.test else next(iter(dataset.test))
  cams = explain(model, variables, dataset.test[cam_set], tests[cam_set], ranking, blocks,
                 settings, out)
  timer.stage("cam", start)
  timer.stage("total", started)

  summary = {
      "run": str(workdir), "model": config.model.name, "train_set": dataset.train_set,
      "settings": settings.to_dict(), "blocks": blocks,
      "ranking": [blocks[i] for i in ranking], "ranking_scores": ranking_scores.tolist(),
      "images": {name: len(value) for name, value in inputs.items()},
      "params": models.param_counts(variables["params"]), "paper": PAPER,
      "trimming": trims["summary"], "cam": cams, "cam_set": cam_set,
      "seconds": timer.seconds}
  if jax.process_index() == 0:
    fileio.atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    page = report.write_report(out, f"Analysis of {workdir}", report_sections(summary, trims),
                               subtitle=f"{config.model.name}, trained on {dataset.train_set}")
    print(f"analysis written to {out} ({timer.seconds['total']:.0f} s): open {page}",
          flush=True)
  return summary


def trim_all(config, settings, model, variables, ranking, kernel, bias, train, tests,
             train_set, blocks, batch_size) -> dict:
  """Every trimmed regressor, its AP on every test set, its size and its speed."""
  head_params = variables["params"]["head"]
  full_params = models.param_counts(variables["params"])
  images = jnp.zeros((batch_size, *data.image_shape(config.data)), jnp.uint8)
  local = jax.tree.map(np.asarray, variables)  # timing runs on one device, unsharded
  full_seconds = trimming.forward_seconds(model, local, images)
  rows, summary, saved = [], [], []
  for size in trimming.sizes(settings.trim_sizes, len(blocks)):
    for variant in trimming.VARIANTS:
      trimmed = trimming.trim(ranking, size, variant, kernel, bias, train)
      saved.append(trimmed.to_json())
      params = trimming.analysis_params(head_params, blocks, trimmed)
      degradation = []
      for test, inputs in tests.items():
        entire = trimming.average_precision(inputs.labels, inputs.logits)
        ap = trimming.average_precision(inputs.labels, trimmed.logits(inputs.primitives))
        degradation.append((entire, ap))
        rows.append({"variant": variant, "size": size, "train": train_set, "test": test,
                     "blocks": " ".join(blocks[i] for i in trimmed.blocks),
                     "ap_entire": round(entire, 4), "ap_trimmed": round(ap, 4),
                     "analysis_params": params})
      summary.append({"variant": variant, "size": size,
                      "ap_deg": round(trimming.ap_deg(*zip(*degradation)), 4),
                      "analysis_params": params,
                      "analysis_fraction": round(params / full_params["head"], 4),
                      "backbone_blocks": max(trimmed.blocks) + 1})
    small = models.from_config(trimming.model_config(config.model, trimmed))
    small_variables = trimming.trimmed_variables(small, local, trimmed, images)
    seconds = trimming.forward_seconds(small, small_variables, images)
    for row in summary[-len(trimming.VARIANTS):]:
      row["forward_ms"] = round(1000 * seconds, 2)
      row["speedup"] = round(full_seconds / seconds, 3)
  return {"rows": rows, "summary": summary, "saved": saved, "full_forward_ms":
          round(1000 * full_seconds, 2), "batch": batch_size}


def explain(model, variables, split, inputs, ranking, blocks, settings, out) -> dict:
  """CAMs of the top blocks for the first real and fake images of `split` (Figures 5-6)."""
  rows = np.concatenate([np.flatnonzero(split.labels == label)[:settings.cam_images]
                         for label in (REAL, FAKE)])
  images = split.images.read(rows)
  layers = [blocks[i] for i in ranking[:settings.cam_layers]]
  probabilities = 1 / (1 + np.exp(-inputs.logits[rows]))
  titles = [f"{'fake' if inputs.labels[r] else 'real'}\np(fake)={p:.2f}"
            for r, p in zip(rows, probabilities)]
  local = jax.tree.map(np.asarray, variables)
  methods = ["score", "grad"] if settings.cam == "score" else ["grad"]
  written = {}
  for method in methods:
    heatmaps = {}
    for layer in layers:
      if method == "score":
        with tqdm(desc=f"Score-CAM {layer}", unit="masked image") as bar:
          heatmaps[layer] = np.asarray(cam.score_cam(
              model, local, images, layer, chunk=settings.cam_chunk, maps=settings.cam_maps,
              progress=_moves(bar)))
      else:
        heatmaps[layer] = np.asarray(cam.grad_cam(model, local, images, layer))
    name = f"cam_{method}.png"
    if jax.process_index() == 0:
      cam.cam_figure(images, heatmaps, titles, out / name)
    written[method] = {"file": name, "layers": layers, "ids": [str(i) for i in split.ids[rows]]}
  return written


def _moves(bar):
  """A `cam.score_cam` progress callback (done, total) that moves a tqdm bar."""

  def update(done: int, total: int) -> None:
    bar.total = total
    bar.update(done - bar.n)

  return update


def write_trimming(out: epath.Path, trims: dict, ranking, blocks, rank_by: str) -> None:
  """The trimming tables, regressors and Figures 7 and 8."""
  trimming.write_csv(out / "trimming.csv", trims["rows"])
  trimming.write_csv(out / "trimming_summary.csv", trims["summary"])
  fileio.atomic_write_text(out / "trimming.json", json.dumps(
      {"rank_by": rank_by, "ranking": [blocks[i] for i in ranking], "blocks": blocks,
       "trimmed": trims["saved"]}, indent=1) + "\n")
  for variant in trimming.VARIANTS:
    trimming.experiments_chart(out / f"trimming_experiments_{variant}.png", trims["rows"],
                               variant)
  trimming.degradation_chart(out / "trimming_degradation.png", trims["summary"])


def _millions(count: float) -> str:
  return f"{count / 1e6:.3g}M"


def report_sections(summary: dict, trims: dict) -> list:
  """The report page: the run, importance, CAMs, trimming and timings."""
  blocks, params = summary["blocks"], summary["params"]
  full = [row for row in trims["rows"] if row["size"] == len(blocks) and row["variant"] ==
          "masked"]
  by_size = {(row["variant"], row["size"]): row for row in trims["summary"]}
  best = {n: by_size.get(("masked", n)) for n in (1, 3)}
  size_rows = [["backbone", _millions(params["backbone"]), "about 24M"],
               ["analysis part (all projections and the dense layer)", _millions(params["head"]),
                "about 16M"]]
  for n, paper in ((1, "about 0.32M"), (3, "under 1M")):
    if best[n]:
      size_rows.append([f"analysis part, best {n}", _millions(best[n]["analysis_params"]),
                        paper])
  run_section = report.Section("Run", paragraphs=[
      f"Model {summary['model']} trained on {summary['train_set']}; the best checkpoint of "
      f"{summary['run']}. Images read: " + ", ".join(
          f"{name} {count}" for name, count in summary["images"].items()) + "."],
      tables=[report.Table(["test set", "AP (%)"],
                           [[row["test"], row["ap_entire"]] for row in full],
                           "AP of the full model on each test set (recomputed from the "
                           "primitives; equal to results/ap.csv)"),
              report.Table(["part", "parameters", "paper (EfficientNetV2-S)"], size_rows,
                           "Parameter counts (paper section V)")])
  ranking = summary["ranking"]
  importance_section = report.Section(
      "Layer importance (section IV-D, Figure 4)",
      paragraphs=[
          "Block i adds w_i . p_i to the logit (eq. 3); the bars are its mean over the real "
          "(blue) and fake (orange) images of each test set. Blocks are ranked by "
          f"{summary['settings']['rank_by']} on the validation split: "
          + ", ".join(ranking[:10]) + (" ..." if len(ranking) > 10 else "") + "."],
      figures=[report.Figure("importance.png", "w_i . p_i per block, real and fake images")])
  cam_figures = [report.Figure(info["file"], f"{'Score' if method == 'score' else 'Grad'}-CAM "
                               f"on {', '.join(info['layers'])}; images "
                               f"{', '.join(info['ids'])} of the {summary['cam_set']} test set")
                 for method, info in summary["cam"].items()]
  cam_section = report.Section(
      "Class activation maps (Figures 5 and 6)",
      paragraphs=["Heatmaps of the evidence for 'fake' on the most important blocks: the "
                  "first image of each class in the test set of the training method, then one "
                  "overlay per block."], figures=cam_figures)
  trim_rows = [[row["variant"], row["size"], row["backbone_blocks"],
                _millions(row["analysis_params"]), f"{100 * row['analysis_fraction']:.1f}%",
                row["ap_deg"], row["forward_ms"], f"{row['speedup']:.2f}x"]
               for row in trims["summary"]]
  per_test = [[row["variant"], row["size"], row["test"], row["ap_entire"], row["ap_trimmed"]]
              for row in trims["rows"]]
  trimming_section = report.Section(
      "Trimming (section V, eq. 5, Figures 7 and 8)",
      paragraphs=[
          "The top N blocks of the ranking keep their projections; 'masked' keeps the trained "
          "regressor's weights (the paper's description), 'refit' fits it again on training "
          "images. The backbone runs only up to the deepest kept block. Forward time: one "
          f"batch of {trims['batch']} images on one device; the full model takes "
          f"{trims['full_forward_ms']} ms."],
      tables=[report.Table(["variant", "N", "backbone blocks run", "analysis params",
                            "of the full part", "AP_deg (points)", "forward (ms)", "speed-up"],
                           trim_rows, "AP_deg over this run's test sets"),
              report.Table(["variant", "N", "test set", "AP entire", "AP trimmed"], per_test,
                           "AP per experiment")],
      figures=[report.Figure("trimming_degradation.png", "AP_deg against the analysis part's "
                             "parameters (Figure 8)")] + [
          report.Figure(f"trimming_experiments_{variant}.png",
                        f"Degradation per experiment, {variant} regressor (Figure 7)")
          for variant in trimming.VARIANTS])
  timing_section = report.Section(
      "Timings", tables=[report.Table(["stage", "seconds"],
                                      [[k, v] for k, v in summary["seconds"].items()])])
  return [run_section, importance_section, cam_section, trimming_section, timing_section]
