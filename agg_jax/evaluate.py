"""Evaluation: scores every test set and saves the scores; metrics and tables are views of them.

For each test set the run writes `results/scores/<test_set>.npz` (scores = probability of fake,
labels, ids, and video ids where the data has them), then `results/metrics.json` (metrics.py)
and the paper-style `results/ap.csv` and `results/summary.md` (tables.py).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from agg_jax import checkpoint, data, fileio, models, run, sharding, tables
from agg_jax.data import Dataset, Split, eval_batches
from agg_jax.metrics import compute_metrics


def make_predict_fn(model, mesh):
  """Jitted (variables, images) -> fake probabilities, batch split over the mesh."""

  def predict(variables, images):
    logits, _ = model.apply(variables, images, train=False)
    return jax.nn.sigmoid(logits)

  return jax.jit(predict, in_shardings=(None, sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))


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
  results_dir = os.path.join(workdir, "results")
  os.makedirs(os.path.join(results_dir, "scores"), exist_ok=True)
  per_test = {}
  for name, split in dataset.test.items():
    scores = score_split(predict, variables, split, config.train.eval_batch_size, mesh)
    if jax.process_index() == 0:
      run.save_scores(os.path.join(results_dir, "scores", f"{name}.npz"), scores=scores,
                         labels=split.labels, ids=split.ids, video_ids=split.video_ids)
    per_test[name] = compute_metrics(split.labels, scores, video_ids=split.video_ids)
  results = {"model": config.model.name, "head": config.model.head,
             "train": dataset.train_set, "test_sets": per_test}
  if jax.process_index() == 0:
    fileio.atomic_write_text(os.path.join(results_dir, "metrics.json"),
                             json.dumps(results, indent=2))
    tables.write_run_tables(results_dir)
    with open(os.path.join(results_dir, "summary.md")) as f:
      print(f.read(), flush=True)
  return results


def evaluate_run(config, workdir: str) -> dict:
  """Scores every test set with the best checkpoint of the run in `workdir`."""
  mesh = sharding.make_mesh(config.mesh)
  dataset = data.load(config.data)
  model = models.from_config(config.model)
  sample = jnp.zeros((1, *dataset.train.images.shape[1:]), jnp.uint8)
  abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), sample))
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)),
      abstract)
  ckpts = checkpoint.RunCheckpoints(workdir)
  variables = ckpts.restore_best(abstract)
  ckpts.close()
  return evaluate_dataset(make_predict_fn(model, mesh), variables, dataset, config, workdir, mesh)
