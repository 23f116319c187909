"""Layer importance (paper section IV-D, Figure 4): which blocks' features decide real or fake.

The score is linear in the primitives (eq. 3), s = sum_i w_i . p_i + b, so block i adds
c_i = w_i . p_i to the logit: the dot product of its primitives with their regressor weights
(`models.head.importance` gives the per-primitive products). Averaged over the real and over
the fake images of a test set, the c_i give Figure 4's bars; a positive c_i pushes towards
"fake". Blocks are ranked by the energy of their contributions, mean |c_i| over images (the
paper: "the higher the energy of every such product the more meaningful it is"), or by how far
apart the real and fake means lie ("separation"). The ranking is computed on the validation
split, never on a test set, because trimming (trimming.py) selects blocks by it.
"""

import csv
import dataclasses
import io
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np

from agg_jax import evaluate, fileio, sharding
from agg_jax.analysis import plotting
from agg_jax.data import FAKE, REAL, Split, eval_batches
from agg_jax.models import head as head_lib

RANKINGS = ("energy", "separation")


@dataclasses.dataclass(frozen=True)
class HeadInputs:
  """What the aggregation head saw for every image of a split: primitives (N, L, P), the model's
  logits (N,), labels (1 fake) and ids."""
  primitives: np.ndarray
  logits: np.ndarray
  labels: np.ndarray
  ids: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)

  def subset(self, rows: np.ndarray) -> "HeadInputs":
    return HeadInputs(self.primitives[rows], self.logits[rows], self.labels[rows], self.ids[rows])


def make_forward_fn(model, mesh) -> Callable:
  """Jitted (variables, images) -> (logits, primitives) (`evaluate.jit_inference`)."""

  def forward(variables, images):
    logits, aux = model.apply(variables, images, train=False)
    return logits, aux["primitives"]

  return evaluate.jit_inference(forward, mesh)


def collect(forward, variables, split: Split, batch_size: int, mesh,
            rows: np.ndarray | None = None,
            progress: Callable[[int], None] | None = None) -> HeadInputs:
  """The head's inputs for every image of `split` (or its `rows`), in order."""
  if rows is not None:
    split = dataclasses.replace(split, images=_Rows(split.images, rows),
                                labels=split.labels[rows], ids=split.ids[rows], video_ids=None,
                                methods=None)
  logits, primitives = [], []
  batches = eval_batches(split, batch_size, jax.process_index(), jax.process_count())
  for start, batch in zip(range(0, len(split), batch_size), batches):
    images = sharding.global_batch({"images": batch["images"]}, mesh)["images"]
    batch_logits, batch_primitives = forward(variables, images)
    keep = len(split) - start  # the last batch is padded
    logits.append(np.asarray(batch_logits)[:keep])
    primitives.append(np.asarray(batch_primitives)[:keep])
    if progress:
      progress(min(batch_size, keep))
  return HeadInputs(np.concatenate(primitives).astype(np.float32),
                    np.concatenate(logits).astype(np.float32), np.asarray(split.labels),
                    np.asarray(split.ids))


class _Rows:
  """Some rows of an `Images` reader, as an `Images` reader."""

  def __init__(self, images, rows: np.ndarray):
    self.images, self.rows = images, np.asarray(rows)
    self.shape = images.shape

  def __len__(self) -> int:
    return len(self.rows)

  def read(self, indices: np.ndarray) -> np.ndarray:
    return self.images.read(self.rows[np.asarray(indices)])


def contributions(primitives: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """c_i = w_i . p_i for every image and block: (N, L), summing to the logit minus the bias."""
  return np.asarray(head_lib.importance(primitives, kernel)).sum(axis=-1)


def class_means(contrib: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
  """Mean contribution of each block over the real and over the fake images (Figure 4's bars);
  NaN for a class with no images."""
  means = {}
  for name, label in (("real", REAL), ("fake", FAKE)):
    rows = contrib[labels == label]
    means[name] = rows.mean(axis=0) if len(rows) else np.full(contrib.shape[1], np.nan)
  return means


def block_scores(contrib: np.ndarray, labels: np.ndarray, by: str = "energy") -> np.ndarray:
  """One importance score per block: mean |c_i| ("energy") or |mean fake - mean real| c_i
  ("separation")."""
  if by == "energy":
    return np.abs(contrib).mean(axis=0)
  if by == "separation":
    means = class_means(contrib, labels)
    return np.abs(means["fake"] - means["real"])
  raise ValueError(f"ranking {by!r}: use one of {RANKINGS}")


def rank_blocks(contrib: np.ndarray, labels: np.ndarray, by: str = "energy") -> list[int]:
  """Block indices, most important first (ties in forward order)."""
  scores = block_scores(contrib, labels, by)
  return [int(i) for i in np.argsort(-scores, kind="stable")]


def write_csv(path, blocks: Sequence[str], per_set: Mapping[str, HeadInputs],
              kernel: np.ndarray, ranking: Sequence[int], ranking_scores: np.ndarray) -> None:
  """One row per (image set, block): the mean contribution over its real and fake images, the
  mean energy, and the block's rank on the validation split (1 = most important)."""
  rank_of = {block: rank + 1 for rank, block in enumerate(ranking)}
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["set", "block_index", "block", "rank", "ranking_score", "real_mean",
                   "fake_mean", "energy", "real_images", "fake_images"])
  for name, inputs in per_set.items():
    contrib = contributions(inputs.primitives, kernel)
    means = class_means(contrib, inputs.labels)
    energy = np.abs(contrib).mean(axis=0)
    for i, block in enumerate(blocks):
      writer.writerow([name, i, block, rank_of[i], f"{ranking_scores[i]:.6g}",
                       f"{means['real'][i]:.6g}", f"{means['fake'][i]:.6g}",
                       f"{energy[i]:.6g}", int((inputs.labels == REAL).sum()),
                       int((inputs.labels == FAKE).sum())])
  fileio.atomic_write_text(path, out.getvalue())


def chart(path, blocks: Sequence[str], per_set: Mapping[str, HeadInputs],
          kernel: np.ndarray) -> None:
  """Figure 4: per block, the mean contribution over real (blue) and fake (orange) images, one
  panel per image set."""
  numbers = np.arange(len(blocks))
  fig, axes = plotting.figure(max(6.0, 0.28 * len(blocks) + 2), 2.4 * len(per_set),
                              rows=len(per_set), squeeze=False, gridspec_kw={"hspace": 0.6})
  for ax, (name, inputs) in zip(axes[:, 0], per_set.items()):
    means = class_means(contributions(inputs.primitives, kernel), inputs.labels)
    ax.bar(numbers - 0.2, means["real"], 0.4, color=plotting.REAL_COLOR, label="real")
    ax.bar(numbers + 0.2, means["fake"], 0.4, color=plotting.FAKE_COLOR, label="fake")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_title(f"{name}: {int((inputs.labels == REAL).sum())} real, "
                 f"{int((inputs.labels == FAKE).sum())} fake images", fontsize=9)
    ax.set_ylabel("w_i . p_i")
    ax.set_xticks(numbers)
    ax.set_xticklabels([str(i) for i in numbers], fontsize=7)
    ax.legend(fontsize=7, loc="upper left")
  axes[-1, 0].set_xlabel("block (forward order)")
  plotting.save_figure(fig, path)
