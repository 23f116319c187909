"""Evaluation: scores every test set and saves the scores; metrics and tables are views of them.

For each test set the run writes `results/scores/<test_set>.npz` (scores = probability of fake,
labels, ids, and video ids where the data has them; run.py defines the format), then
`results/metrics.json` (metrics.py) and the paper-style `results/ap.csv` and
`results/summary.md` (tables/). `evaluate_run` needs the run directory alone: the model comes
from its saved config and best checkpoint, and only the test sets are read.
"""

import json

import jax
import numpy as np

from agg_jax import data, fileio, run, sharding, tables
from agg_jax.data import Dataset, Split, eval_batches
from agg_jax.metrics import compute_metrics


def jit_inference(forward, mesh):
  """`forward(variables, images)` jitted as every inference program is: the batch split over the
  mesh, the outputs replicated."""
  return jax.jit(forward, in_shardings=(None, sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))


def make_predict_fn(model, mesh):
  """Jitted (variables, images) -> fake probabilities (`jit_inference`)."""

  def predict(variables, images):
    logits, _ = model.apply(variables, images, train=False)
    return jax.nn.sigmoid(logits)

  return jit_inference(predict, mesh)


def score_split(predict, variables, split: Split, batch_size: int, mesh) -> np.ndarray:
  """Fake probabilities for every image of `split`, in order."""
  scores = []
  batches = eval_batches(split, batch_size, jax.process_index(), jax.process_count())
  for start, batch in zip(range(0, len(split), batch_size), batches):
    images = sharding.global_batch({"images": batch["images"]}, mesh)["images"]
    scores.append(np.asarray(predict(variables, images))[:len(split) - start])  # drop padding
  return np.concatenate(scores).astype(np.float32)


def evaluate_dataset(predict, variables, dataset: Dataset, config, workdir: str, mesh) -> dict:
  """Scores every test set, writes scores, metrics.json, ap.csv and summary.md; returns metrics."""
  per_test = {}
  for name, split in dataset.test.items():
    scores = score_split(predict, variables, split, config.train.eval_batch_size, mesh)
    if jax.process_index() == 0:
      run.save_scores(run.scores_path(workdir, name), scores=scores, labels=split.labels,
                      ids=split.ids, video_ids=split.video_ids)
    per_test[name] = compute_metrics(split.labels, scores, video_ids=split.video_ids)
  results = {"model": config.model.name, "head": config.model.head,
             "train": dataset.train_set, "test_sets": per_test}
  if jax.process_index() == 0:
    results_dir = run.results_dir(workdir)
    fileio.atomic_write_text(results_dir / run.METRICS, json.dumps(results, indent=2))
    tables.write_run_tables(results_dir)
    print((results_dir / run.SUMMARY).read_text(), flush=True)
  return results


def evaluate_run(config, workdir: str) -> dict:
  """Scores every test set with the best checkpoint of the run in `workdir`."""
  mesh = sharding.make_mesh(config.mesh)
  model, variables = run.restore_best(workdir, config, mesh)
  dataset = data.load(config.data)  # a split's images are read only when scored
  return evaluate_dataset(make_predict_fn(model, mesh), variables, dataset, config, workdir, mesh)
