"""The grid's results as one Markdown page: shortcut audit, AP matrices over seeds, the paired
comparison of the heads, the trimmed model, unseen real photos, importance and CAM figures."""

from collections.abc import Mapping, Sequence

import numpy as np

from agg_jax.grid import compare

HEAD_NAMES = {"aggregation": "aggregation (all blocks)", "logits": "plain binary head (baseline)",
              "trimmed": "aggregation trimmed to the top 3 projections"}


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |",
           "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return lines + [""]


def _pm(values: Sequence[float], digits: int = 1) -> str:
  values = np.asarray([v for v in values if np.isfinite(v)], np.float64)
  if not values.size:
    return "-"
  if values.size == 1:
    return f"{values[0]:.{digits}f}"
  return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def shortcut_section(audit: Mapping, tests: Sequence[str]) -> list[str]:
  """audit[control] = {"sizes": {set: faces}, "cues": {cue: {method: {test: AP}}},
  "fake_fraction": {test: fraction}}."""
  lines = ["## Shortcuts: what a cue alone reaches", "",
           "Each cue is used as the score, in the direction that separates the training set "
           "(real Yonsei photos vs the training method), and judged on each test set. "
           "Chance is the fraction of fakes in the test set (an uninformative cue ties "
           "everywhere and reaches exactly that).", ""]
  for control, entry in audit.items():
    lines += [f"**Control `{control}`**: {entry['description']}", ""]
    lines += _table(["faces per set"] + list(entry["sizes"]),
                    [["faces"] + list(entry["sizes"].values())])
    rows = [["chance (fraction of fakes)", "-"] + [f"{100 * entry['fake_fraction'][t]:.1f}"
                                                  for t in tests]]
    for cue, by_method in entry["cues"].items():
      for method, aps in by_method.items():
        rows.append([cue, method] + [f"{aps[t]:.1f}" for t in tests])
    lines += _table(["cue", "trained on"] + [f"AP on {t}" for t in tests], rows)
  return lines


def results_section(cells: Mapping, heads: Sequence[str], methods: Sequence[str],
                    tests: Sequence[str], seeds: Sequence[int]) -> list[str]:
  """cells[(head, method, seed)] = cell.json of the control."""
  lines = [f"### AP (%) per training method and test set, mean ± std over {len(seeds)} seeds",
           ""]
  rows = []
  for head in heads:
    for method in methods:
      rows.append([HEAD_NAMES[head], method] + [
          _pm([cells[(head, method, s)][_ap_key(head)][t] for s in seeds]) for t in tests])
  lines += _table(["model", "trained on"] + [f"{t}" for t in tests], rows)
  lines += [f"### Summaries over seeds (mean ± std over {len(seeds)} seeds)", ""]
  rows = []
  for head in heads:
    matrices = [compare.ap_matrix({(m, t): cells[(head, m, s)][_ap_key(head)][t]
                                   for m in methods for t in tests}, methods, tests)
                for s in seeds]
    rows.append([HEAD_NAMES[head],
                 _pm([compare.unseen_mean(x, methods, tests) for x in matrices]),
                 _pm([float(np.mean(x)) for x in matrices]),
                 _pm([compare.cov_inverse(x) for x in matrices], 2)])
  lines += _table(["model", "mean AP, unseen methods", "mean AP, all", "CoV^-1"], rows)
  lines += ["Per seed (AP matrix rows: trained on; columns: " + ", ".join(tests) + "):", ""]
  rows = []
  for head in heads:
    for s in seeds:
      rows.append([HEAD_NAMES[head], s] + [
          " / ".join(f"{cells[(head, m, s)][_ap_key(head)][t]:.1f}" for t in tests)
          for m in methods])
  lines += _table(["model", "seed"] + [f"trained on {m}" for m in methods], rows)
  return lines


def _ap_key(head: str) -> str:
  return "trimmed" if head == "trimmed" else "ap"


def comparison_section(differences: Sequence[compare.Difference], first: str,
                       second: str) -> list[str]:
  lines = [f"### Paired comparison: {first} minus {second}", "",
           f"Bootstrap over test images (within each test set and class, the same draw for "
           f"both) and seeds ({differences[0].replicates} replicates).", ""]
  rows = [[d.summary, f"{d.first:.2f}", f"{d.second:.2f}", f"{d.difference:+.2f}",
           f"[{d.low:+.2f}, {d.high:+.2f}]", f"{100 * d.first_ahead:.0f}%"]
          for d in differences]
  lines += _table(["summary", first, second, "difference", "95% interval",
                   f"replicates where {first} is ahead"], rows)
  return lines


def verdict(difference: compare.Difference) -> str:
  """One sentence on the paper's claim from the unseen-method AP difference."""
  if difference.low > 0:
    return (f"the aggregation head generalises better here: {difference.difference:+.1f} AP "
            f"points on unseen methods, 95% interval [{difference.low:+.1f}, "
            f"{difference.high:+.1f}]")
  if difference.high < 0:
    return (f"the plain head generalises better here, against the paper's claim: "
            f"{difference.difference:+.1f} AP points on unseen methods for aggregation, 95% "
            f"interval [{difference.low:+.1f}, {difference.high:+.1f}]")
  return (f"no difference can be claimed here: {difference.difference:+.1f} AP points on unseen "
          f"methods for aggregation, 95% interval [{difference.low:+.1f}, "
          f"{difference.high:+.1f}] includes 0")


def unseen_real_section(cells_by_control: Mapping, heads: Sequence[str]) -> list[str]:
  lines = ["## Unseen real photos (AMFD studio portraits)", "",
           "False-positive rate on every AMFD face (never trained on) at the threshold chosen "
           "on the validation split (Youden's J), mean ± std over training methods and seeds.",
           ""]
  rows = []
  for control, cells in cells_by_control.items():
    for head in heads:
      if head == "trimmed":
        continue
      entries = [c["unseen_real"] for (h, _, _), c in cells.items() if h == head
                 and "unseen_real" in c]
      if entries:
        rows.append([control, HEAD_NAMES[head], entries[0]["faces"],
                     _pm([100 * e["false_positive_rate"] for e in entries]),
                     _pm([100 * e["mean_probability"] for e in entries])])
  return lines + _table(["control", "model", "faces", "false positives (%)",
                         "mean p(fake) (%)"], rows)
