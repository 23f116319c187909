"""The grid's summaries against metrics.cov_summary and hand computations, and the paired
bootstrap on models whose difference is known."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from agg_jax import metrics
from agg_jax.grid import compare

METHODS = ["a", "b"]
TESTS = ["a", "b", "c"]


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_equals_scikit_learns_with_ties(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, 60)
  labels[:2] = (0, 1)
  scores = rng.integers(0, 8, 60) / 8  # many ties
  assert compare.average_precision(labels, scores) == pytest.approx(
      average_precision_score(labels, scores), abs=1e-12)
  scores = rng.normal(size=60)
  assert compare.average_precision(labels, scores) == pytest.approx(
      average_precision_score(labels, scores), abs=1e-12)


def test_summaries_of_an_ap_matrix():
  aps = {("a", "a"): 100.0, ("a", "b"): 60.0, ("a", "c"): 80.0,
         ("b", "a"): 70.0, ("b", "b"): 90.0, ("b", "c"): 50.0}
  matrix = compare.ap_matrix(aps, METHODS, TESTS)
  assert compare.unseen_mean(matrix, METHODS, TESTS) == (60 + 80 + 70 + 50) / 4
  expected = np.mean([metrics.cov_summary([100, 60, 80])["cov_inv"],
                      metrics.cov_summary([70, 90, 50])["cov_inv"]])
  assert compare.cov_inverse(matrix) == pytest.approx(expected)


def _scores(quality: float, seeds, rng) -> compare.Scores:
  """Scores whose separation grows with `quality` (labels: 20 real, 20 fake per test set)."""
  labels = np.repeat([0, 1], 20)
  return {(s, m, t): (labels, labels * quality + rng.normal(0, 1, 40))
          for s in seeds for m in METHODS for t in TESTS}


def test_a_clearly_better_model_wins_with_an_interval_above_zero():
  rng = np.random.default_rng(0)
  seeds = [0, 1, 2]
  better, worse = _scores(4.0, seeds, rng), _scores(0.0, seeds, rng)
  difference = compare.paired_bootstrap(better, worse, seeds, METHODS, TESTS,
                                        replicates=100)
  assert difference.difference > 20 and difference.low > 0
  assert difference.first_ahead == 1.0


def test_a_model_against_itself_differs_by_nothing():
  rng = np.random.default_rng(1)
  seeds = [0, 1]
  same = _scores(1.0, seeds, rng)
  difference = compare.paired_bootstrap(same, same, seeds, METHODS, TESTS, replicates=50)
  assert difference.difference == 0.0
  assert difference.low <= 0 <= difference.high
