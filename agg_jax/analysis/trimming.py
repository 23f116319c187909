"""Trimming (paper section V, eq. 5, Figures 7 and 8): keep the N most important projections.

The blocks are ranked by importance.py (on the validation split); a trimmed model keeps the
primitive projections of the top N blocks and one dense layer over their N x 10 primitives.
Two ways to get that layer:

  masked  the trained regressor's own weights for the kept primitives. Each dropped block's
          contribution is replaced by its mean over training images, a constant folded into
          the bias: the ranking of images (so the AP) is that of deleting the blocks, and the
          probabilities stay calibrated. This is the paper's description: the trained analysis
          network is trimmed and its AP degradation measured; no retraining is mentioned.
  refit   the regressor fitted again on the kept primitives of training images (logistic
          regression: eq. 4's loss), backbone and projections unchanged.

A trimmed model is a model config with `blocks` set to the kept ones (models.create then runs
the backbone only up to the deepest of them, so it is faster, not only smaller) and variables
taken from the full model's (`trimmed_variables`).
"""

import csv
import dataclasses
import io
import time
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from agg_jax import fileio, models
from agg_jax.analysis import plotting
from agg_jax.analysis.importance import HeadInputs

VARIANTS = ("masked", "refit")


@dataclasses.dataclass(frozen=True)
class Trimmed:
  """A trimmed regressor: the kept block indices (forward order) and the dense layer over their
  primitives (kernel (N * P,), bias)."""
  size: int
  variant: str
  blocks: tuple[int, ...]
  kernel: np.ndarray
  bias: float

  def logits(self, primitives: np.ndarray) -> np.ndarray:
    """The trimmed model's logits from the full model's primitives (N, L, P)."""
    kept = primitives[:, list(self.blocks)].reshape(len(primitives), -1)
    return kept @ self.kernel + self.bias

  def to_json(self) -> dict:
    return {"size": self.size, "variant": self.variant, "blocks": list(self.blocks),
            "kernel": [float(w) for w in self.kernel], "bias": float(self.bias)}

  @classmethod
  def from_json(cls, saved: dict) -> "Trimmed":
    return cls(int(saved["size"]), saved["variant"], tuple(saved["blocks"]),
               np.asarray(saved["kernel"], np.float32), float(saved["bias"]))


def sizes(requested: Sequence[int], num_blocks: int) -> list[int]:
  """The trimming budgets N that exist for this backbone, ascending, always ending with all."""
  return sorted({n for n in requested if 0 < n < num_blocks} | {num_blocks})


def trim(ranking: Sequence[int], size: int, variant: str, kernel: np.ndarray, bias: float,
         train: HeadInputs) -> Trimmed:
  """The regressor of the top `size` blocks of `ranking`; `train` gives the dropped blocks' mean
  contributions (masked) or the data to fit on (refit)."""
  num_blocks, per_block = train.primitives.shape[1:]
  blocks = tuple(sorted(ranking[:size]))
  weights = np.asarray(kernel, np.float32).reshape(num_blocks, per_block)
  if variant == "masked":
    dropped = [i for i in range(num_blocks) if i not in blocks]
    fill = float((train.primitives[:, dropped] * weights[dropped]).sum(axis=(1, 2)).mean()) \
        if dropped else 0.0
    return Trimmed(size, variant, blocks, weights[list(blocks)].reshape(-1), bias + fill)
  if variant == "refit":
    kept = train.primitives[:, list(blocks)].reshape(len(train), -1)
    new_kernel, new_bias = refit_regressor(kept, train.labels)
    return Trimmed(size, variant, blocks, new_kernel, new_bias)
  raise ValueError(f"trimming variant {variant!r}: use one of {VARIANTS}")


def refit_regressor(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
  """Logistic regression on standardised features, returned as (kernel, bias) on the raw ones."""
  mean, scale = features.mean(axis=0), features.std(axis=0)
  scale = np.where(scale > 0, scale, 1.0)
  fit = LogisticRegression(C=1.0, max_iter=2000).fit((features - mean) / scale, labels)
  kernel = fit.coef_[0] / scale
  return kernel.astype(np.float32), float(fit.intercept_[0] - (kernel * mean).sum())


def model_config(model: ml_collections.ConfigDict, trimmed: Trimmed) -> ml_collections.ConfigDict:
  """`config.model` of the trimmed classifier: the same model aggregating the kept blocks."""
  return ml_collections.ConfigDict({**model.to_dict(), "blocks": tuple(trimmed.blocks)})


def trimmed_variables(model, full_variables, trimmed: Trimmed, images):
  """The trimmed `model`'s variables: every one it has taken from the full model's, and the
  dense layer over the kept primitives from `trimmed`."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)

  def pick(shape_tree, source):
    if isinstance(shape_tree, Mapping):
      return {key: pick(sub, source[key]) for key, sub in shape_tree.items()}
    if shape_tree.shape != source.shape:
      raise ValueError(f"trimmed model expects {shape_tree.shape}, full model has {source.shape}")
    return source

  picked = {collection: pick(tree, full_variables[collection])
            for collection, tree in shapes.items() if collection != "params"}
  params = {key: pick(tree, full_variables["params"][key])
            for key, tree in shapes["params"].items() if key != "head"}
  head = {key: pick(tree, full_variables["params"]["head"][key])
          for key, tree in shapes["params"]["head"].items() if key != "aggregate"}
  head["aggregate"] = {"kernel": jnp.asarray(trimmed.kernel, jnp.float32)[:, None],
                       "bias": jnp.asarray([trimmed.bias], jnp.float32)}
  return {**picked, "params": {**params, "head": head}}


def analysis_params(head_params, block_names: Sequence[str], trimmed: Trimmed) -> int:
  """Parameters of the trimmed analysis part: the kept projections and the dense layer."""
  kept = sum(models.count_params(head_params[f"projection_{block_names[i]}"])
             for i in trimmed.blocks)
  return kept + trimmed.kernel.size + 1


def average_precision(labels: np.ndarray, logits: np.ndarray) -> float:
  """AP in percent, as the paper's tables give it."""
  return float(100 * average_precision_score(labels, logits))


def ap_deg(entire: Sequence[float], trimmed: Sequence[float]) -> float:
  """Eq. 5: the mean |AP_entire - AP_trimmed| over the (train, test) experiments given."""
  entire, trimmed = np.asarray(entire, float), np.asarray(trimmed, float)
  if entire.shape != trimmed.shape or not entire.size:
    raise ValueError("AP_deg needs one trimmed AP per experiment")
  return float(np.abs(entire - trimmed).mean())


def forward_seconds(model, variables, images, repeats: int = 7) -> float:
  """Wall time of one jitted forward pass over `images`: the fastest of `repeats` after a
  warm-up call (the least disturbed by other work on the machine)."""
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
  jax.block_until_ready(forward(variables, images))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(forward(variables, images))
    times.append(time.perf_counter() - start)
  return min(times)


def write_csv(path, rows: Sequence[dict]) -> None:
  """The trimming table: one row per (variant, N, test set)."""
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  fileio.atomic_write_text(path, out.getvalue())


def read_csv(path) -> list[dict]:
  """The rows of a trimming table written by `write_csv`, with numbers as numbers."""
  rows = list(csv.DictReader(io.StringIO(fileio.path(path).read_text(), newline="")))
  for row in rows:
    row["size"], row["analysis_params"] = int(row["size"]), int(row["analysis_params"])
    row["ap_entire"], row["ap_trimmed"] = float(row["ap_entire"]), float(row["ap_trimmed"])
  return rows


def summarize(rows: Sequence[dict]) -> list[dict]:
  """AP_deg (eq. 5) per (variant, N) over every (train, test) experiment in `rows`, with the
  mean parameter count of the trimmed analysis parts."""
  groups = {}
  for row in rows:
    groups.setdefault((row["variant"], row["size"]), []).append(row)
  return [{"variant": variant, "size": size, "experiments": len(group),
           "ap_deg": round(ap_deg([r["ap_entire"] for r in group],
                                  [r["ap_trimmed"] for r in group]), 4),
           "analysis_params": int(round(np.mean([r["analysis_params"] for r in group])))}
          for (variant, size), group in sorted(groups.items())]


def experiments_chart(path, rows: Sequence[dict], variant: str) -> None:
  """Figure 7: |AP_entire - AP_trimmed| per (train, test) experiment, one bar per N."""
  rows = [row for row in rows if row["variant"] == variant]
  experiments = list(dict.fromkeys((row["train"], row["test"]) for row in rows))
  budgets = sorted({row["size"] for row in rows})
  fig, ax = plotting.figure(max(5.0, 1.3 * len(experiments) + 1.5), 3.2)
  width = 0.8 / len(budgets)
  colors = plotting.plt.get_cmap("viridis")(np.linspace(0, 0.9, len(budgets)))
  for k, size in enumerate(budgets):
    degradation = [next(abs(r["ap_entire"] - r["ap_trimmed"]) for r in rows
                        if (r["train"], r["test"]) == e and r["size"] == size)
                   for e in experiments]
    ax.bar(np.arange(len(experiments)) + (k - (len(budgets) - 1) / 2) * width, degradation,
           width, color=colors[k], label=f"N={size}")
  ax.set_xticks(np.arange(len(experiments)))
  ax.set_xticklabels([f"({train}, {test})" for train, test in experiments], fontsize=8)
  ax.set_ylabel("|AP_entire - AP_trimmed| (points)")
  ax.set_title(f"Trimming by experiment ({variant} regressor)", fontsize=9)
  ax.legend(fontsize=7, ncols=min(len(budgets), 6))
  plotting.save_figure(fig, path)


def degradation_chart(path, summary: Sequence[dict]) -> None:
  """Figure 8: AP_deg against the analysis part's parameter count (log scale), per variant."""
  fig, ax = plotting.figure(5.5, 3.4)
  for variant, marker in zip(VARIANTS, "os"):
    points = sorted((row["analysis_params"], row["ap_deg"], row["size"]) for row in summary
                    if row["variant"] == variant)
    if not points:
      continue
    ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, label=variant)
    for params, deg, size in points:
      ax.annotate(f"N={size}", (params, deg), textcoords="offset points", xytext=(3, 4),
                  fontsize=7)
  ax.set_xscale("log")
  ax.set_xlabel("analysis part parameters")
  ax.set_ylabel("AP_deg (points, eq. 5)")
  ax.set_title("AP degradation against the analysis part's size", fontsize=9)
  ax.legend(fontsize=8)
  plotting.save_figure(fig, path)
