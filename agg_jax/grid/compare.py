"""Summaries of a grid's AP matrices and a paired bootstrap of two models' difference.

For one model and seed the AP matrix holds AP[train method][test set] (paper Table II). Its
summaries: the mean AP on unseen methods (test set != training method) and CoV^-1 (section
III-C: mean / std of a row's APs, averaged over the training methods; Table II includes the
in-domain test). Over seeds: their mean and spread.

The paired bootstrap asks how sure the difference between two models is: each replicate draws
the test images again (within each test set, reals and fakes separately; the same draw for both
models, which scored the same images) and each model's seeds again (with replacement), and
recomputes each model's summary averaged over its drawn seeds. The 2.5th and 97.5th percentiles
of the difference are its 95% interval; the fraction of replicates where the first model is
ahead says how often it would win again on such data and training noise.
"""

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from agg_jax import metrics

# Scores of one model: {(seed, train method, test set): (labels, scores)}, every test set's
# images in the same order for every model, seed and method.
Scores = Mapping[tuple[int, str, str], tuple[np.ndarray, np.ndarray]]


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
  """scikit-learn's average_precision_score (sum over thresholds of recall gained times
  precision, tied scores one threshold), in numpy: the bootstrap computes it a hundred thousand
  times, where scikit-learn's checks cost a millisecond a call."""
  order = np.argsort(-scores, kind="stable")
  scores, labels = scores[order], labels[order]
  last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
  true_positives = np.cumsum(labels)[last_of_tie]
  precision = true_positives / (last_of_tie + 1)
  recall_gained = np.diff(np.r_[0, true_positives]) / true_positives[-1]
  return float(np.sum(recall_gained * precision))


def ap_matrix(aps: Mapping[tuple[str, str], float], methods: Sequence[str],
              tests: Sequence[str]) -> np.ndarray:
  """AP[(method, test)] as an array (methods x tests)."""
  return np.array([[aps[(m, t)] for t in tests] for m in methods], np.float64)


def unseen_mean(matrix: np.ndarray, methods: Sequence[str], tests: Sequence[str]) -> float:
  """The mean AP over the cells whose test set is not the training method."""
  return float(np.mean([matrix[i, j] for i, m in enumerate(methods)
                        for j, t in enumerate(tests) if m != t]))


def cov_inverse(matrix: np.ndarray) -> float:
  """CoV^-1 of each training method's row (mean / std over test sets), averaged over the rows
  where it is defined (a row of equal APs has none): NaN when no row has one."""
  values = [metrics.cov_summary(row)["cov_inv"] for row in matrix]
  defined = [v for v in values if v is not None]
  return float(np.mean(defined)) if defined else float("nan")


SUMMARIES = {"unseen_ap": unseen_mean,
             "cov_inv": lambda matrix, methods, tests: cov_inverse(matrix)}


@dataclasses.dataclass(frozen=True)
class Difference:
  summary: str
  first: float  # the first model's summary, averaged over its seeds
  second: float
  low: float  # 95% bootstrap interval of first - second
  high: float
  first_ahead: float  # fraction of replicates with first > second
  replicates: int

  @property
  def difference(self) -> float:
    return self.first - self.second


def _model_summary(scores: Scores, seeds, methods, tests, draws, summary) -> float:
  values = []
  for seed in seeds:
    aps = {}
    for m in methods:
      for t in tests:
        labels, values_ = scores[(seed, m, t)]
        rows = draws[t]
        aps[(m, t)] = 100 * average_precision(labels[rows], values_[rows])
    values.append(SUMMARIES[summary](ap_matrix(aps, methods, tests), methods, tests))
  return float(np.mean(values))


def _stratified(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  rows = [rng.choice(np.flatnonzero(labels == c), size=int((labels == c).sum()))
          for c in (0, 1)]
  return np.concatenate(rows)


def paired_bootstrap(first: Scores, second: Scores, seeds: Sequence[int],
                     methods: Sequence[str], tests: Sequence[str], summary: str = "unseen_ap",
                     replicates: int = 1000, seed: int = 0) -> Difference:
  """The difference first - second of a summary (SUMMARIES) and its bootstrap interval."""
  rng = np.random.default_rng(seed)
  labels = {t: first[(seeds[0], methods[0], t)][0] for t in tests}
  everything = {t: np.arange(len(labels[t])) for t in tests}
  point = [_model_summary(s, seeds, methods, tests, everything, summary) for s in (first, second)]
  differences = []
  for _ in range(replicates):
    draws = {t: _stratified(labels[t], rng) for t in tests}
    a = _model_summary(first, rng.choice(seeds, len(seeds)), methods, tests, draws, summary)
    b = _model_summary(second, rng.choice(seeds, len(seeds)), methods, tests, draws, summary)
    differences.append(a - b)
  differences = np.asarray(differences)
  low, high = np.percentile(differences, [2.5, 97.5])
  return Difference(summary, point[0], point[1], float(low), float(high),
                    float((differences > 0).mean()), replicates)
