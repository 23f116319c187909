"""Tests of agg_jax.metrics against scikit-learn, scipy and hand-computed values."""

import json
import statistics

import numpy as np
import pytest
from scipy import interpolate, optimize
from sklearn import metrics as sk_metrics

from agg_jax import metrics


def _random_set(seed=0, n=400):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n)
  scores = np.clip(0.5 + 0.25 * (labels - 0.5) + 0.25 * rng.standard_normal(n), 0, 1)
  return labels, scores


def _reference_eer(labels, scores):
  """The common EER recipe: root of 1 - tpr(fpr) - fpr on the interpolated ROC curve."""
  fpr, tpr, _ = sk_metrics.roc_curve(labels, scores)
  return optimize.brentq(lambda x: 1.0 - interpolate.interp1d(fpr, tpr)(x) - x, 0.0, 1.0)


def test_frame_metrics_match_scikit_learn():
  labels, scores = _random_set()
  result = metrics.compute_metrics(labels, scores, threshold=0.6)
  frame = result["frame"]
  assert result["level"] == "frame" and "video" not in result
  assert frame["ap"] == pytest.approx(sk_metrics.average_precision_score(labels, scores))
  assert frame["roc_auc"] == pytest.approx(sk_metrics.roc_auc_score(labels, scores))
  assert frame["accuracy"] == pytest.approx(sk_metrics.accuracy_score(labels, scores >= 0.6))
  assert frame["eer"] == pytest.approx(_reference_eer(labels, scores), abs=1e-9)
  assert (frame["num_examples"], frame["num_fake"]) == (400, labels.sum())
  assert frame["num_real"] == 400 - labels.sum()


# Worked by hand. AP is scikit-learn's step-wise sum over the distinct thresholds t, from the
# highest down: AP = sum_t (R(t) - R(t_prev)) * P(t), with P(t) and R(t) the precision and recall
# of calling every score >= t fake; tied scores enter together. Without ties this is the mean,
# over the fakes, of the precision at each fake's rank. ROC-AUC is the fraction of (fake, real)
# pairs in which the fake scores higher, a tie counting half. Accuracy calls score >= threshold
# fake (a score exactly at the threshold is a fake call).
HAND_CASES = [
    pytest.param(
        # Ranked: 0.9 fake, 0.8 real, 0.7 fake, 0.4 fake, 0.2 real.
        [0, 1, 1, 0, 1], [0.8, 0.4, 0.9, 0.2, 0.7], 0.7,
        # The fakes sit at ranks 1, 3, 4: precisions 1/1, 2/3, 3/4.
        (1 + 2 / 3 + 3 / 4) / 3,  # = 29/36
        # Fakes 0.9, 0.7, 0.4 against reals 0.8, 0.2: 0.9 beats both, 0.7 and 0.4 beat 0.2 only.
        (2 + 1 + 1) / 6,
        # Called fake: 0.8, 0.9, 0.7 (at the threshold). Right: 0.9, 0.7, 0.2 (real, below).
        3 / 5,
        id="no-ties"),
    pytest.param(
        # Fakes 0.8, 0.5, 0.5; reals 0.8, 0.5, 0.1: every fake is tied with a real.
        [0, 1, 0, 1, 0, 1], [0.5, 0.5, 0.8, 0.8, 0.1, 0.5], 0.5,
        # t = 0.8: 1 fake + 1 real called, P = 1/2, R = 1/3. t = 0.5: 3 fakes + 2 reals called,
        # P = 3/5, R = 1. t = 0.1 adds no recall.
        1 / 3 * 1 / 2 + (1 - 1 / 3) * 3 / 5,  # = 17/30
        # Fake 0.8: tie, beats 0.5, beats 0.1 -> 2.5; each fake 0.5: loses, tie, beats -> 1.5.
        (2.5 + 1.5 + 1.5) / 9,  # = 11/18
        # Called fake: all but 0.1; right: the three fakes and the real at 0.1.
        4 / 6,
        id="tied-scores"),
]


@pytest.mark.parametrize("labels, scores, threshold, ap, roc_auc, accuracy", HAND_CASES)
def test_frame_metrics_match_values_worked_by_hand(labels, scores, threshold, ap, roc_auc,
                                                   accuracy):
  frame = metrics.compute_metrics(labels, scores, threshold=threshold)["frame"]
  assert frame["ap"] == pytest.approx(ap, abs=1e-12)
  assert frame["roc_auc"] == pytest.approx(roc_auc, abs=1e-12)
  assert frame["accuracy"] == pytest.approx(accuracy, abs=1e-12)
  # The same values from scikit-learn, a second reference for the hand arithmetic.
  assert ap == pytest.approx(sk_metrics.average_precision_score(labels, scores), abs=1e-12)
  assert roc_auc == pytest.approx(sk_metrics.roc_auc_score(labels, scores), abs=1e-12)


def _stepwise_ap(labels, scores):
  """AP as a loop over the distinct thresholds, highest first (tied scores enter together)."""
  num_fake, ap, recall = sum(labels), 0.0, 0.0
  for t in sorted(set(scores), reverse=True):
    called = [label for label, score in zip(labels, scores) if score >= t]
    new_recall = sum(called) / num_fake
    ap += (new_recall - recall) * sum(called) / len(called)
    recall = new_recall
  return ap


def _pairwise_auc(labels, scores):
  """The fraction of (fake, real) pairs ranked correctly, a tie counting half."""
  fakes = [s for label, s in zip(labels, scores) if label == 1]
  reals = [s for label, s in zip(labels, scores) if label == 0]
  wins = sum(1.0 if f > r else 0.5 if f == r else 0.0 for f in fakes for r in reals)
  return wins / (len(fakes) * len(reals))


def test_frame_metrics_on_many_tied_scores_match_the_definitions():
  labels, scores = _random_set(seed=1, n=200)
  scores = np.round(scores * 20) / 20  # 21 distinct values: most scores are tied
  labels, scores = labels.tolist(), scores.tolist()
  frame = metrics.compute_metrics(labels, scores, threshold=0.5)["frame"]
  assert frame["ap"] == pytest.approx(_stepwise_ap(labels, scores), abs=1e-12)
  assert frame["roc_auc"] == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)
  correct = sum((score >= 0.5) == (label == 1) for label, score in zip(labels, scores))
  assert frame["accuracy"] == pytest.approx(correct / len(labels), abs=1e-12)
  assert sum(score == 0.5 for score in scores) > 0  # scores at the threshold are exercised


@pytest.mark.parametrize(
    "labels, scores, eer",
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 0.0),  # separable
        ([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9], 1.0),  # inverted
        ([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.5),  # ROC passes (0.5, 0.5)
        ([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # constant scores: the diagonal
    ],
)
def test_equal_error_rate_by_hand(labels, scores, eer):
  assert metrics.equal_error_rate(np.array(labels), np.array(scores)) == pytest.approx(eer)


def test_video_level_averages_frames_of_each_video():
  video_ids = np.array(["b", "a", "b", "c", "a", "c", "d", "d"])
  labels = np.array([1, 0, 1, 1, 0, 1, 0, 0])
  scores = np.array([0.9, 0.2, 0.5, 0.3, 0.4, 0.1, 0.7, 0.1])
  result = metrics.compute_metrics(labels, scores, video_ids=video_ids)
  video_scores = np.array([0.3, 0.7, 0.2, 0.4])  # a, b, c, d
  video_labels = np.array([0, 1, 1, 0])
  assert result["level"] == "video" and result["video_aggregation"] == "mean"
  assert result["video"]["num_examples"] == 4 and result["frame"]["num_examples"] == 8
  assert result["video"]["ap"] == pytest.approx(
      sk_metrics.average_precision_score(video_labels, video_scores)
  )
  assert result["video"]["roc_auc"] == pytest.approx(
      sk_metrics.roc_auc_score(video_labels, video_scores)
  )
  # By hand: ranked 0.7 fake, 0.4 real, 0.3 real, 0.2 fake: AP = (1/1 + 2/4) / 2; of the four
  # (fake, real) pairs only 0.7's two are ranked correctly.
  assert result["video"]["ap"] == pytest.approx(0.75, abs=1e-12)
  assert result["video"]["roc_auc"] == pytest.approx(0.5, abs=1e-12)
  assert result["video"]["accuracy"] == pytest.approx(0.75)  # c (fake, 0.2) is missed


@pytest.mark.parametrize(
    "aggregation, expected", [("mean", [0.2, 0.5]), ("median", [0.1, 0.5]), ("max", [0.5, 0.9])]
)
def test_video_aggregations(aggregation, expected):
  labels, video_scores, ids = metrics.aggregate_by_video(
      [0, 0, 0, 1, 1], [0.1, 0.5, 0.0, 0.1, 0.9], [7, 7, 7, 3, 3], aggregation=aggregation
  )
  assert ids.tolist() == [3, 7] and labels.tolist() == [1, 0]
  assert video_scores.tolist() == pytest.approx(expected[::-1])


def test_video_mixing_labels_is_named():
  with pytest.raises(ValueError, match="mix real and fake.*'v2'"):
    metrics.compute_metrics([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], video_ids=["v1", "v2", "v2", "v3"])


def test_one_class_gives_none_not_nan_and_stays_json():
  result = metrics.compute_metrics([1, 1, 1], [0.2, 0.7, 0.9], video_ids=[0, 1, 1])
  for level in ("frame", "video"):
    assert result[level]["ap"] is None
    assert result[level]["roc_auc"] is None and result[level]["eer"] is None
  assert result["frame"]["accuracy"] == pytest.approx(2 / 3)
  assert json.loads(json.dumps(result, allow_nan=False)) == result


@pytest.mark.parametrize(
    "labels, scores, kwargs, message",
    [
        ([], [], {}, "no examples"),
        ([0, 1], [0.5], {}, "must be 1-D and match"),
        ([0, 2], [0.1, 0.2], {}, "labels must be 0"),
        ([0, 1], [0.1, 1.5], {}, r"scores must be fake probabilities in \[0, 1\]"),
        ([0, 1], [0.1, np.nan], {}, "NaN"),
        ([0, 1], [0.1, 0.2], {"video_ids": [1]}, "video_ids has shape"),
        ([0, 1], [0.1, 0.2], {"video_ids": [1, 2], "video_aggregation": "mode"}, "'mode'"),
    ],
)
def test_bad_input_is_explained(labels, scores, kwargs, message):
  with pytest.raises(ValueError, match=message):
    metrics.compute_metrics(labels, scores, **kwargs)


def test_cov_summary_uses_population_std():
  values = [97.06, 87.82, 89.19, 99.77, 81.15, 76.22]  # Table I, "Ours", without PGAN
  summary = metrics.cov_summary(values)
  assert summary["std"] == pytest.approx(statistics.pstdev(values))
  assert summary["n"] == 6
  assert (round(summary["mean"], 2), round(summary["std"], 2), round(summary["cov_inv"], 2)) == (
      88.54,
      8.23,
      10.76,
  )


def test_cov_summary_edge_cases():
  assert metrics.cov_summary([90.0, 90.0])["cov_inv"] is None
  with pytest.raises(ValueError, match="non-empty"):
    metrics.cov_summary([])
  with pytest.raises(ValueError, match="non-finite"):
    metrics.cov_summary([1.0, float("nan")])
