"""Detection metrics from saved scores: AP, ROC-AUC, EER, accuracy; frame and video level.

The paper reports Average Precision per test set (section III-C, Tables I and II) and ranks
methods by CoV^-1 = mean(AP) / std(AP) over the test sets (`cov_summary`). Scores are fake
probabilities in [0, 1], labels are 1 for fake and 0 for real.

Video level (the default wherever video ids exist): the frame scores of one video are aggregated
(mean by default; median or max as options) into one score per video, and the metrics are
computed over videos. Frame level is always computed beside it.

Undefined metrics: AP, ROC-AUC and EER need both classes. When a set holds only one class they
are None (and JSON null), while accuracy and the counts are still given; `compute_metrics` never
returns NaN. An empty set, mismatched lengths, labels outside {0, 1}, scores outside [0, 1] and a
video whose frames carry different labels raise ValueError.
"""

from collections.abc import Sequence

import numpy as np
from sklearn import metrics as sk_metrics

VIDEO_AGGREGATIONS = {"mean": np.mean, "median": np.median, "max": np.max}


def compute_metrics(labels, scores, *, video_ids=None, threshold=0.5, video_aggregation="mean"):
  """All metrics of one test set, at frame level and (given video ids) at video level.

  Returns plain JSON-serialisable values: {"level": "video" or "frame" (the default level),
  "threshold": ..., "frame": level_metrics, "video": level_metrics (only with video_ids),
  "video_aggregation": ... (only with video_ids)}; see `level_metrics` for the inner keys.
  """
  labels, scores = _validated(labels, scores)
  result = {
      "level": "frame",
      "threshold": float(threshold),
      "frame": level_metrics(labels, scores, threshold=threshold),
  }
  if video_ids is not None:
    video_labels, video_scores, _ = aggregate_by_video(
        labels, scores, video_ids, aggregation=video_aggregation
    )
    result["level"] = "video"
    result["video_aggregation"] = video_aggregation
    result["video"] = level_metrics(video_labels, video_scores, threshold=threshold)
  return result


def level_metrics(labels, scores, *, threshold=0.5):
  """AP, ROC-AUC, EER (all in [0, 1], None with one class) and accuracy at `threshold`.

  A score >= threshold is called fake. Also returns num_examples, num_fake, num_real.
  """
  labels, scores = _validated(labels, scores)
  both_classes = 0 < labels.sum() < labels.size
  return {
      "ap": float(sk_metrics.average_precision_score(labels, scores)) if both_classes else None,
      "roc_auc": float(sk_metrics.roc_auc_score(labels, scores)) if both_classes else None,
      "eer": equal_error_rate(labels, scores) if both_classes else None,
      "accuracy": float(sk_metrics.accuracy_score(labels, scores >= threshold)),
      "num_examples": int(labels.size),
      "num_fake": int(labels.sum()),
      "num_real": int(labels.size - labels.sum()),
  }


def equal_error_rate(labels, scores):
  """The rate where false positives equal false negatives on the ROC curve.

  Linear interpolation between the two ROC points where FNR - FPR changes sign.
  """
  fpr, tpr, _ = sk_metrics.roc_curve(labels, scores, drop_intermediate=False)
  fnr = 1.0 - tpr
  gap = fnr - fpr  # 1 at the first point, -1 at the last, non-increasing in between
  i = int(np.argmax(gap <= 0))
  if gap[i] == 0:
    return float(fpr[i])
  t = gap[i - 1] / (gap[i - 1] - gap[i])
  return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def aggregate_by_video(labels, scores, video_ids, *, aggregation="mean"):
  """One label and one score per video: (video_labels, video_scores, video_ids), sorted by id.

  The frame scores of a video are combined by `aggregation` ("mean", "median" or "max"). Every
  frame of a video must carry the same label; otherwise ValueError names the video.
  """
  if aggregation not in VIDEO_AGGREGATIONS:
    raise ValueError(
        f"video_aggregation={aggregation!r} is not one of {sorted(VIDEO_AGGREGATIONS)}"
    )
  labels, scores = _validated(labels, scores)
  video_ids = np.asarray(video_ids)
  if video_ids.shape != labels.shape:
    raise ValueError(f"video_ids has shape {video_ids.shape}, labels {labels.shape}")
  unique_ids, video_index = np.unique(video_ids, return_inverse=True)
  order = np.argsort(video_index, kind="stable")
  starts = np.flatnonzero(np.r_[True, np.diff(video_index[order]) != 0])
  sorted_labels = labels[order]
  first_label = sorted_labels[starts]
  mixed = np.minimum.reduceat(sorted_labels, starts) != np.maximum.reduceat(sorted_labels, starts)
  if mixed.any():
    bad = [str(v) for v in unique_ids[mixed][:5]]
    raise ValueError(f"{int(mixed.sum())} video(s) mix real and fake frame labels, e.g. {bad}")
  reduce = VIDEO_AGGREGATIONS[aggregation]
  video_scores = np.array([reduce(group) for group in np.split(scores[order], starts[1:])])
  return first_label, video_scores, unique_ids


def cov_summary(ap_values: Sequence[float]):
  """Mean, population std (ddof=0) and CoV^-1 = mean / std of AP values (section III-C).

  The values are used in their own unit (the paper's tables use percent). cov_inv is None when
  std is 0 (the ratio is undefined; JSON has no infinity). Also returns n, the number of values.
  """
  values = np.asarray(ap_values, dtype=np.float64)
  if values.ndim != 1 or values.size == 0:
    raise ValueError(
        f"cov_summary needs a non-empty list of AP values, got shape {values.shape}"
    )
  if not np.isfinite(values).all():
    raise ValueError(f"cov_summary got non-finite AP values: {values.tolist()}")
  mean, std = float(values.mean()), float(values.std())
  return {
      "n": int(values.size),
      "mean": mean,
      "std": std,
      "cov_inv": mean / std if std > 0 else None,
  }


def _validated(labels, scores):
  """Labels as an int array in {0, 1} and scores as a float array in [0, 1], same 1-D shape."""
  labels = np.asarray(labels)
  scores = np.asarray(scores, dtype=np.float64)
  if labels.ndim != 1 or labels.shape != scores.shape:
    raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be 1-D and match")
  if labels.size == 0:
    raise ValueError("no examples: labels and scores are empty")
  if not np.isin(labels, (0, 1)).all():
    raise ValueError(f"labels must be 0 (real) or 1 (fake), got {np.unique(labels)[:10]}")
  if not (np.isfinite(scores).all() and scores.min() >= 0 and scores.max() <= 1):
    raise ValueError(
        "scores must be fake probabilities in [0, 1], got values in "
        f"[{np.nanmin(scores)}, {np.nanmax(scores)}]"
        + ("" if np.isfinite(scores).all() else " and NaN/inf")
    )
  return labels.astype(np.int64), scores
