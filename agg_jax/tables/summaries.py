"""Tables as data: AP per (training set, test set), mean, std and CoV^-1 (section III-C).

A Table is renderer-agnostic: which cells are best, which columns are in-domain and what the
notes say is decided here; render.py only formats.
"""

import dataclasses

from agg_jax import metrics

IN_DOMAIN_MARK = "†"  # on a test set's label when its in-domain AP is left out of the summary


@dataclasses.dataclass(frozen=True)
class Column:
  label: str
  group: str = ""  # header spanning columns (the training set), "" for none
  best: str = ""  # "max" or "min": which value is marked best; "" for none
  summary: bool = False  # summarises the row's cells: compared only among complete rows


@dataclasses.dataclass(frozen=True)
class Table:
  """A renderer-agnostic table: cells are float, int, str or None (missing)."""

  title: str
  row_label: str
  columns: tuple[Column, ...]
  rows: tuple[tuple[str, tuple], ...]
  notes: tuple[str, ...] = ()
  best_cells: frozenset[tuple[int, int]] = frozenset()  # (row, column) indices marked best


SUMMARY_COLUMNS = (
    Column("n", summary=True),
    Column("mean", best="max", summary=True),
    Column("std", best="min", summary=True),
    Column("CoV^-1", best="max", summary=True),
)


def summarize(records, *, exclude_in_domain=False):
  """{model: metrics.cov_summary of its APs}, models in order of first appearance.

  exclude_in_domain leaves out the APs whose test set is the training set (Table I's protocol;
  Table II keeps them).
  """
  summaries = {}
  for model in distinct(r.model for r in records):
    values = [
        r.ap for r in records if r.model == model and not (exclude_in_domain and r.test == r.train)
    ]
    if not values:
      raise ValueError(f"model {model!r} has no AP left after excluding in-domain tests")
    summaries[model] = metrics.cov_summary(values)
  return summaries


def comparison_table(records, *, exclude_in_domain=False, reference=None):
  """Models x (training set, test set) APs with mean, std and CoV^-1: Table I / Table II.

  An excluded in-domain column is marked (IN_DOMAIN_MARK) and never best. Summary columns mark
  their best among the complete rows only (those covering every summarised cell).
  reference: {model: (mean, std, cov_inv)}, e.g. the paper's numbers, shown beside ours with
  "match" telling whether all three agree to two decimals.
  """
  pairs = distinct((r.train, r.test) for r in records)
  ap = {(r.model, r.train, r.test): r.ap for r in records}
  summaries = summarize(records, exclude_in_domain=exclude_in_domain)
  excluded = [exclude_in_domain and train == test for train, test in pairs]
  columns = [
      Column(ap_label(train, test, exclude_in_domain), f"Train on {train}", "" if out else "max")
      for (train, test), out in zip(pairs, excluded)
  ]
  columns += SUMMARY_COLUMNS
  if reference is not None:
    columns += [Column("ref mean"), Column("ref std"), Column("ref CoV^-1"), Column("match")]
  rows, complete_rows = [], set()
  for i, (model, summary) in enumerate(summaries.items()):
    cells = [ap.get((model, train, test)) for train, test in pairs]
    cells += [summary["n"], summary["mean"], summary["std"], summary["cov_inv"]]
    if reference is not None:
      cells += _reference_cells(summary, reference.get(model))
    rows.append((model, tuple(cells)))
    if summary["n"] == excluded.count(False):  # records are unique: every summarised pair
      complete_rows.add(i)
  return Table(
      title="AP (%) per training and test set; mean, population std, "
      "CoV^-1 = mean/std (section III-C).",
      row_label="Model",
      columns=tuple(columns),
      rows=tuple(rows),
      notes=(
          _trains_note(records),
          protocol_note(records, exclude_in_domain),
          _missing_note(rows, len(pairs), complete_rows),
          _levels_note(records),
      ),
      best_cells=_best_cells(columns, rows, complete_rows),
  )


def model_matrix(records, model):
  """One model's APs: training sets as rows, test sets as columns (Table II per model)."""
  own = [r for r in records if r.model == model]
  tests = distinct(r.test for r in own)
  ap = {(r.train, r.test): r.ap for r in own}
  rows = tuple(
      (f"Train on {train}", tuple(ap.get((train, test)) for test in tests))
      for train in distinct(r.train for r in own)
  )
  return Table(title=f"{model}: AP (%)", row_label="", columns=tuple(map(Column, tests)), rows=rows)


def ap_label(train, test, exclude_in_domain):
  """The test set's column label, marked when its in-domain AP is left out of the summary."""
  return test + IN_DOMAIN_MARK if exclude_in_domain and test == train else test


def protocol_note(records, exclude_in_domain):
  has_in_domain = any(r.test == r.train for r in records)
  if not has_in_domain:
    return "No test set is a training set."
  if exclude_in_domain:
    return (
        f"{IN_DOMAIN_MARK} In-domain test (test set = training set): shown, but excluded from "
        "n, mean, std and CoV^-1 (as Table I) and never marked best."
    )
  return "Summary includes the in-domain tests (test set = training set), as Table II."


def distinct(items):
  """The items without repeats, in order of first appearance."""
  return list(dict.fromkeys(items))


def _best_cells(columns, rows, complete_rows):
  """(row, column) indices of each column's best value at two decimals (ties all marked).

  A summary column compares only complete_rows: a summary of fewer cells is not comparable.
  """
  marked = set()
  for j, column in enumerate(columns):
    values = {
        i: round(cells[j], 2)
        for i, (_, cells) in enumerate(rows)
        if isinstance(cells[j], float) and (i in complete_rows or not column.summary)
    }
    if not column.best or len(values) < 2:
      continue
    target = max(values.values()) if column.best == "max" else min(values.values())
    marked.update((i, j) for i, value in values.items() if value == target)
  return frozenset(marked)


def _reference_cells(summary, reference):
  if reference is None:
    return [None, None, None, "not in reference"]
  ours = (summary["mean"], summary["std"], summary["cov_inv"])
  agree = all(a is not None and round(a, 2) == round(b, 2) for a, b in zip(ours, reference))
  return [*reference, "yes" if agree else "NO"]


def _trains_note(records):
  return f"Training set(s): {', '.join(distinct(r.train for r in records))}."


def _missing_note(rows, num_pairs, complete_rows):
  missing = [
      f"{name} ({num_pairs - cells[:num_pairs].count(None)} of {num_pairs})"
      for name, cells in rows
      if None in cells[:num_pairs]
  ]
  if not missing:
    return ""
  short = [name for i, (name, _) in enumerate(rows) if i not in complete_rows]
  return f"Missing cells (–): {', '.join(missing)}." + (
      f" The summaries of {', '.join(short)} cover fewer tests: they do not compare with the "
      "others and are never marked best."
      if short
      else ""
  )


def _levels_note(records):
  levels = distinct(r.level for r in records if r.level)
  return f"Evaluation level: {', '.join(levels)}." if levels else ""
