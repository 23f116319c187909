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
