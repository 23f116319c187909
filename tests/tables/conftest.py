"""Run directories as evaluation writes them, shared by the tests of agg_jax.tables."""

import json

import numpy as np
import pytest

from agg_jax import metrics, run


def make_run(root, *, model, train, tests, seed, videos=True, write_metrics=True):
  """A run directory as evaluation writes it: config.json, results/metrics.json, scores/."""
  rng = np.random.default_rng(seed)
  (root / "results" / "scores").mkdir(parents=True)
  (root / "config.json").write_text(
      json.dumps({"model": {"name": model}, "data": {"train_set": train}})
  )
  test_sets = {}
  for k, test in enumerate(tests):
    video_ids = np.repeat([f"{test}_{v:03d}" for v in range(20)], 5)
    labels = np.repeat(np.arange(20) % 2, 5)
    scores = np.clip(
        0.5 + (0.1 + 0.1 * k) * (labels - 0.5) * 4 + 0.3 * rng.standard_normal(labels.size), 0, 1
    )
    frame_indices = np.tile(np.arange(5), 20)
    ids = [f"{v}/{i}" for v, i in zip(video_ids, frame_indices)]
    run.save_scores(
        root / "results" / "scores" / f"{test}.npz",
        scores=scores,
        labels=labels,
        ids=ids,
        video_ids=video_ids if videos else None,
        frame_indices=frame_indices if videos else None,
    )
    test_sets[test] = metrics.compute_metrics(
        labels, scores, video_ids=video_ids if videos else None
    )
  if write_metrics:
    (root / "results" / "metrics.json").write_text(
        json.dumps({"model": model, "train": train, "test_sets": test_sets})
    )
  return root


@pytest.fixture(name="make_run")
def make_run_fixture():
  return make_run


@pytest.fixture
def two_runs(tmp_path):
  tests = ["PGAN", "SGAN", "Glow"]
  return [
      make_run(tmp_path / "run_pgan", model="agg", train="PGAN", tests=tests, seed=1),
      make_run(tmp_path / "run_sgan", model="agg", train="SGAN", tests=tests, seed=2),
  ]
