r"""The paper's tables from saved results: AP per test set, mean, std and CoV^-1 (section III-C).

Scores are the source of truth and tables are views of them: the inputs are run directories
written by evaluation or long-format CSV files, never a model.

- Run directory: `RUN/config.json` (model.name, data.train_set), `RUN/results/metrics.json`
  (`{"model", "train", "test_sets": {test: metrics.compute_metrics(...)}}`) and
  `RUN/results/scores/<test>.npz` (scores, labels, ids, optional video_ids, frame_indices).
  `--from-scores` recomputes the metrics from the score files.
- Long-format CSV: columns model,train,test,ap (AP in percent or in [0, 1]); other columns are
  ignored except `level`.

The comparison table has one row per model and one column per (training set, test set) pair,
grouped by training set: Table I's layout for one training set, Table II's (left) for several.
Beside it: mean, population std and CoV^-1 = mean / std of the model's APs (Table I right,
Table II right). Table II averages all 16 train/test pairs; Table I leaves the training set out
(`--exclude-in-domain`). Best value per column in bold (Markdown, LaTeX). With several
training sets, each model's training x test matrix follows. `--out=DIR` writes tables.md,
tables.tex, ap_table.csv (plain numbers), summary.csv and ap_long.csv (readable by --csv).

  python -m agg_jax.tables runs/ff_df runs/ff_nt --out=tables/
  python -m agg_jax.tables --csv=tests/data/paper_table1.csv --exclude-in-domain \
      --reference=tests/data/paper_table1_summary.csv
"""

import csv
import dataclasses
import io
import json
from pathlib import Path
import sys

from absl import app
from absl import flags
import numpy as np

from agg_jax import fileio, metrics

LONG_COLUMNS = ("model", "train", "test", "ap")
REFERENCE_COLUMNS = ("model", "mean", "std", "cov_inv")
LEVELS = ("video", "frame")  # in order of preference: video level is the default


@dataclasses.dataclass(frozen=True)
class ApRecord:
  """The AP (in percent) of one model trained on `train` and tested on `test`."""

  model: str
  train: str
  test: str
  ap: float
  level: str = ""  # "video" or "frame" when known
  source: str = ""  # the file (and line) it came from, for error messages


@dataclasses.dataclass(frozen=True)
class Column:
  label: str
  group: str = ""  # header spanning columns (the training set), "" for none
  best: str = ""  # "max" or "min": which value is marked best; "" for none


@dataclasses.dataclass(frozen=True)
class Table:
  """A renderer-agnostic table: cells are float, int, str or None (missing)."""

  title: str
  row_label: str
  columns: tuple[Column, ...]
  rows: tuple[tuple[str, tuple], ...]
  notes: tuple[str, ...] = ()


SUMMARY_COLUMNS = (
    Column("n"),
    Column("mean", best="max"),
    Column("std", best="min"),
    Column("CoV^-1", best="max"),
)


# ----------------------------------------------------------------------------- inputs


def read_long_csv(path, *, ap_scale="auto"):
  """ApRecords from a CSV with columns model,train,test,ap.

  ap_scale: "percent", "fraction" (AP in [0, 1]) or "auto" (fraction when every AP <= 1).
  """
  rows = _read_csv(path, LONG_COLUMNS)
  values = [_parse_number(row["ap"], source, "ap") for source, row in rows]
  factor = 100.0 if _is_fraction_scale(values, ap_scale) else 1.0
  records = [
      ApRecord(
          *_names(row, source),
          ap=_checked_percent(value * factor, source),
          level=(row.get("level") or "").strip(),
          source=source,
      )
      for (source, row), value in zip(rows, values)
  ]
  return check_unique(records)


def load_runs(paths, *, level="auto", from_scores=False, threshold=0.5, video_aggregation="mean"):
  """ApRecords (long format) of run directories, results directories or metrics.json files.

  level: "video", "frame" or "auto" (video when every test set of the run has video ids).
  from_scores: recompute the metrics from results/scores/*.npz instead of metrics.json.
  """
  records = []
  for path in paths:
    results_dir = find_results_dir(path)
    model, train = run_identity(results_dir)
    if from_scores:
      test_sets = metrics_from_scores(
          results_dir, threshold=threshold, video_aggregation=video_aggregation
      )
      source = str(results_dir / "scores")
    else:
      test_sets = read_metrics_json(results_dir)["test_sets"]
      source = str(results_dir / "metrics.json")
    records += run_records(model, train, test_sets, level=level, source=source)
  return check_unique(records)


def find_results_dir(path):
  """The folder holding metrics.json or scores/: given a run, its results/ or metrics.json."""
  path = Path(path)
  if path.is_file() and path.name == "metrics.json":
    return path.parent
  for candidate in (path / "results", path):
    if (candidate / "metrics.json").is_file() or (candidate / "scores").is_dir():
      return candidate
  raise FileNotFoundError(
      f"{path}: not a run directory (no results/metrics.json, "
      "results/scores/, metrics.json or scores/)"
  )


def run_identity(results_dir):
  """(model, train) of a run: from metrics.json, else from the run's config.json."""
  results_dir = Path(results_dir)
  if (results_dir / "metrics.json").is_file():
    saved = read_metrics_json(results_dir)
    return saved["model"], saved["train"]
  config_path = results_dir.parent / "config.json"
  config = _read_json(config_path)
  return (
      _lookup(config, ("model", "name"), config_path),
      _lookup(config, ("data", "train_set"), config_path),
  )


def read_metrics_json(results_dir):
  path = Path(results_dir) / "metrics.json"
  saved = _read_json(path)
  for key in ("model", "train", "test_sets"):
    _lookup(saved, (key,), path)
  return saved


def metrics_from_scores(results_dir, *, threshold=0.5, video_aggregation="mean"):
  """{test: compute_metrics output} recomputed from results_dir/scores/<test>.npz."""
  score_files = sorted((Path(results_dir) / "scores").glob("*.npz"))
  if not score_files:
    raise FileNotFoundError(f"{Path(results_dir) / 'scores'}: no .npz score files")
  test_sets = {}
  for path in score_files:
    saved = load_scores(path)
    try:
      test_sets[path.stem] = metrics.compute_metrics(
          saved["labels"],
          saved["scores"],
          video_ids=saved.get("video_ids"),
          threshold=threshold,
          video_aggregation=video_aggregation,
      )
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from e
  return test_sets


def save_scores(path, *, scores, labels, ids, video_ids=None, frame_indices=None):
  """Writes one test set's score file (atomically), readable by `load_scores`.

  ids and video_ids are stored as strings, so the file loads without pickle.
  """
  arrays = {
      "scores": np.asarray(scores),
      "labels": np.asarray(labels),
      "ids": np.asarray(ids).astype(str),
  }
  if video_ids is not None:
    arrays["video_ids"] = np.asarray(video_ids).astype(str)
  if frame_indices is not None:
    arrays["frame_indices"] = np.asarray(frame_indices)
  lengths = {key: len(value) for key, value in arrays.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"{path}: arrays differ in length: {lengths}")
  fileio.atomic_write(path, lambda f: np.savez(f, **arrays))


def load_scores(path):
  """The arrays of one score file (scores, labels, ids, optional video_ids, frame_indices)."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such score file")
  with np.load(path, allow_pickle=False) as saved:
    arrays = {key: saved[key] for key in saved.files}
  missing = [key for key in ("scores", "labels") if key not in arrays]
  if missing:
    raise ValueError(f"{path}: missing array(s) {missing}; found {sorted(arrays)}")
  return arrays


def run_records(model, train, test_sets, *, level="auto", source=""):
  """One ApRecord per test set of a run, at `level` ("auto": the run's default level)."""
  if level not in ("auto", *LEVELS):
    raise ValueError(f"level={level!r} is not one of auto, {', '.join(LEVELS)}")
  chosen = run_levels(test_sets, source)[0] if level == "auto" else level
  records = []
  for test, result in test_sets.items():
    where = f"{source} [{test}]"
    if chosen not in result:
      raise ValueError(f"{where}: no {chosen}-level metrics (test set without video ids?)")
    ap = result[chosen]["ap"]
    if ap is None:
      raise ValueError(f"{where}: AP undefined at {chosen} level (only one class present)")
    records.append(
        ApRecord(
            model, train, test, _checked_percent(100.0 * ap, where), level=chosen, source=where
        )
    )
  return records


def run_levels(test_sets, source=""):
  """The levels every test set has, the default (video when possible) first."""
  if not test_sets:
    raise ValueError(f"{source}: no test sets")
  levels = [lvl for lvl in LEVELS if all(lvl in result for result in test_sets.values())]
  if not levels:
    raise ValueError(f"{source}: test sets lack frame-level metrics")
  return levels


def read_reference(path):
  """{model: (mean, std, cov_inv)} of a CSV with columns model,mean,std,cov_inv."""
  return {
      row["model"].strip(): tuple(_parse_number(row[c], source, c) for c in REFERENCE_COLUMNS[1:])
      for source, row in _read_csv(path, REFERENCE_COLUMNS)
  }


def _read_csv(path, columns):
  """[("file:line", row dict)] of a CSV that must have `columns` (others are ignored)."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such CSV file")
  with path.open(newline="") as f:
    reader = csv.DictReader(f)
    missing = [c for c in columns if c not in (reader.fieldnames or ())]
    if missing:
      raise ValueError(
          f"{path}: missing column(s) {missing}; need {list(columns)}, found {reader.fieldnames}"
      )
    return [(f"{path}:{reader.line_num}", row) for row in reader]


def check_unique(records):
  """The records, after checking that no (model, train, test) appears twice."""
  seen = {}
  for record in records:
    key = (record.model, record.train, record.test)
    if key in seen:
      raise ValueError(
          f"model={key[0]!r} train={key[1]!r} test={key[2]!r} appears twice: "
          f"{seen[key]} and {record.source}"
      )
    seen[key] = record.source
  return records


# ----------------------------------------------------------------------------- summaries


def summarize(records, *, exclude_in_domain=False):
  """{model: metrics.cov_summary of its APs}, models in order of first appearance.

  exclude_in_domain leaves out the APs whose test set is the training set (Table I's protocol;
  Table II keeps them).
  """
  summaries = {}
  for model in _unique(r.model for r in records):
    values = [
        r.ap for r in records if r.model == model and not (exclude_in_domain and r.test == r.train)
    ]
    if not values:
      raise ValueError(f"model {model!r} has no AP left after excluding in-domain tests")
    summaries[model] = metrics.cov_summary(values)
  return summaries


def comparison_table(records, *, exclude_in_domain=False, reference=None):
  """Models x (training set, test set) APs with mean, std and CoV^-1: Table I / Table II.

  reference: {model: (mean, std, cov_inv)}, e.g. the paper's numbers, shown beside ours with
  "match" telling whether all three agree to two decimals.
  """
  pairs = _unique((r.train, r.test) for r in records)
  ap = {(r.model, r.train, r.test): r.ap for r in records}
  summaries = summarize(records, exclude_in_domain=exclude_in_domain)
  columns = [Column(test, group=f"Train on {train}", best="max") for train, test in pairs]
  columns += SUMMARY_COLUMNS
  if reference is not None:
    columns += [Column("ref mean"), Column("ref std"), Column("ref CoV^-1"), Column("match")]
  rows = []
  for model, summary in summaries.items():
    cells = [ap.get((model, train, test)) for train, test in pairs]
    cells += [summary["n"], summary["mean"], summary["std"], summary["cov_inv"]]
    if reference is not None:
      cells += _reference_cells(summary, reference.get(model))
    rows.append((model, tuple(cells)))
  return Table(
      title="AP (%) per training and test set; mean, population std, "
      "CoV^-1 = mean/std (section III-C).",
      row_label="Model",
      columns=tuple(columns),
      rows=tuple(rows),
      notes=(
          _trains_note(records),
          _protocol_note(records, exclude_in_domain),
          _missing_note(records, pairs),
          _levels_note(records),
      ),
  )


def model_matrix(records, model):
  """One model's APs: training sets as rows, test sets as columns (Table II per model)."""
  own = [r for r in records if r.model == model]
  tests = _unique(r.test for r in own)
  ap = {(r.train, r.test): r.ap for r in own}
  rows = tuple(
      (f"Train on {train}", tuple(ap.get((train, test)) for test in tests))
      for train in _unique(r.train for r in own)
  )
  return Table(title=f"{model}: AP (%)", row_label="", columns=tuple(map(Column, tests)), rows=rows)


def _reference_cells(summary, reference):
  if reference is None:
    return [None, None, None, "not in reference"]
  ours = (summary["mean"], summary["std"], summary["cov_inv"])
  agree = all(a is not None and round(a, 2) == round(b, 2) for a, b in zip(ours, reference))
  return [*reference, "yes" if agree else "NO"]


def _trains_note(records):
  return f"Training set(s): {', '.join(_unique(r.train for r in records))}."


def _missing_note(records, pairs):
  counts = {
      model: sum(1 for r in records if r.model == model)
      for model in _unique(r.model for r in records)
  }
  incomplete = [f"{model} ({n} of {len(pairs)})" for model, n in counts.items() if n < len(pairs)]
  if not incomplete:
    return ""
  return (
      f"Missing cells (–): {', '.join(incomplete)}; their summaries cover fewer tests "
      "and do not compare with the others."
  )


def _protocol_note(records, exclude_in_domain):
  has_in_domain = any(r.test == r.train for r in records)
  if not has_in_domain:
    return "No test set is a training set."
  if exclude_in_domain:
    return "Summary excludes each model's in-domain tests (test set = training set), " "as Table I."
  return "Summary includes the in-domain tests (test set = training set), as Table II."


def _levels_note(records):
  levels = _unique(r.level for r in records if r.level)
  return f"Evaluation level: {', '.join(levels)}." if levels else ""


# ----------------------------------------------------------------------------- rendering


def to_markdown(table):
  grouped = _has_groups(table)
  header = [table.row_label] + [_flat_label(c, grouped) for c in table.columns]
  lines = [
      f"**{table.title}**",
      "",
      _md_row(header),
      _md_row(["---"] + ["---:"] * len(table.columns)),
  ]
  for name, cells in _marked_rows(table, lambda text: f"**{text}**"):
    lines.append(_md_row([name, *cells]))
  lines += [""] + [note for note in table.notes if note]
  return "\n".join(lines) + "\n"


def to_csv(table):
  """Plain numbers (no best-value marks), missing cells empty."""
  grouped = _has_groups(table)
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow([table.row_label or "row"] + [_flat_label(c, grouped) for c in table.columns])
  for name, cells in table.rows:
    writer.writerow([name] + ["" if v is None else _csv_value(v) for v in cells])
  return out.getvalue()


def to_latex(table):
  """A booktabs table; groups (training sets) as \\multicolumn headers, best in \\textbf."""
  spec = "l" + "r" * len(table.columns)
  lines = [r"\begin{table}[t]", r"\centering", f"\\begin{{tabular}}{{{spec}}}", r"\toprule"]
  if _has_groups(table):
    lines += _latex_group_header(table.columns)
  lines.append(
      " & ".join([_latex_escape(table.row_label)] + [_latex_escape(c.label) for c in table.columns])
      + r" \\"
  )
  lines.append(r"\midrule")
  for name, cells in _marked_rows(table, _latex_bold, escape=_latex_escape):
    lines.append(" & ".join([_latex_escape(name), *cells]) + r" \\")
  caption = " ".join([table.title] + [note for note in table.notes if note])
  lines += [
      r"\bottomrule",
      r"\end{tabular}",
      f"\\caption{{{_latex_escape(caption)}}}",
      r"\end{table}",
  ]
  return "\n".join(lines) + "\n"


def _marked_rows(table, mark, escape=lambda text: text):
  """Rows of formatted cells, the best value of each column with a `best` rule marked."""
  best = [_best_value(table, j, column.best) for j, column in enumerate(table.columns)]
  for name, cells in table.rows:
    texts = []
    for value, target in zip(cells, best):
      text = escape(_format(value))
      is_best = target is not None and isinstance(value, float) and round(value, 2) == target
      texts.append(mark(text) if is_best else text)
    yield name, texts


def _best_value(table, j, rule):
  """The best rounded value of column j, None when there is nothing to compare."""
  values = [round(cells[j], 2) for _, cells in table.rows if isinstance(cells[j], float)]
  if not rule or len(values) < 2:
    return None
  return max(values) if rule == "max" else min(values)


def _format(value):
  if value is None:
    return "–"
  if isinstance(value, float):
    return f"{value:.2f}"
  return str(value)


def _csv_value(value):
  return f"{value:.4f}" if isinstance(value, float) else str(value)


def _has_groups(table):
  return len(_unique(c.group for c in table.columns if c.group)) > 1


def _flat_label(column, grouped):
  """One-line header: "train→test" when several training sets share the table."""
  if grouped and column.group:
    return f"{column.group.removeprefix('Train on ')}→{column.label}"
  return column.label


def _md_row(cells):
  return "| " + " | ".join(str(c).replace("|", r"\|") for c in cells) + " |"


def _latex_group_header(columns):
  spans, start = [], 0
  for j in range(1, len(columns) + 1):
    if j == len(columns) or columns[j].group != columns[start].group:
      spans.append((columns[start].group, start, j))
      start = j
  header = [""] + [
      f"\\multicolumn{{{end - begin}}}{{c}}{{{_latex_escape(group)}}}"
      for group, begin, end in spans
  ]
  rules = [f"\\cmidrule(lr){{{begin + 2}-{end + 1}}}" for group, begin, end in spans if group]
  return [" & ".join(header) + r" \\", " ".join(rules)]


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "–": "--",
    "→": r"$\to$",
}


def _latex_bold(text):
  return f"\\textbf{{{text}}}"


def _latex_escape(text):
  """Escapes LaTeX's special characters; "^-1" (as in CoV^-1) becomes a superscript."""
  parts = ("".join(_LATEX_SPECIALS.get(ch, ch) for ch in part) for part in str(text).split("^-1"))
  return "$^{-1}$".join(parts)


# ----------------------------------------------------------------------------- outputs


def write_run_tables(results_dir, *, exclude_in_domain=False):
  """Writes results_dir/ap.csv and results_dir/summary.md from results_dir/metrics.json.

  ap.csv: one row, model, train, AP (%) per test set, mean, std, cov_inv at the run's default
  level (video when every test set has video ids). summary.md: the run's own table (AP per test
  set at each level, mean, population std, CoV^-1) and every metric per test set.
  """
  results_dir = find_results_dir(results_dir)
  saved = read_metrics_json(results_dir)
  source = str(results_dir / "metrics.json")
  levels = run_levels(saved["test_sets"], source)
  by_level = {
      level: run_records(
          saved["model"], saved["train"], saved["test_sets"], level=level, source=source
      )
      for level in levels
  }
  default = by_level[levels[0]]
  summary = summarize(default, exclude_in_domain=exclude_in_domain)[saved["model"]]
  header = ["model", "train"] + [r.test for r in default] + ["mean", "std", "cov_inv"]
  values = [r.ap for r in default] + [summary["mean"], summary["std"], summary["cov_inv"]]
  ap_csv = io.StringIO()
  writer = csv.writer(ap_csv, lineterminator="\n")
  writer.writerows(
      [
          header,
          [saved["model"], saved["train"]] + ["" if v is None else _csv_value(v) for v in values],
      ]
  )
  fileio.atomic_write_text(results_dir / "ap.csv", ap_csv.getvalue())
  fileio.atomic_write_text(
      results_dir / "summary.md",
      _run_summary_markdown(saved, by_level, exclude_in_domain=exclude_in_domain),
  )


def _run_summary_markdown(saved, by_level, *, exclude_in_domain):
  tests = [r.test for r in next(iter(by_level.values()))]
  rows = []
  for level, records in by_level.items():
    summary = summarize(records, exclude_in_domain=exclude_in_domain)[saved["model"]]
    rows.append(
        (
            level + (" (default)" if not rows else ""),
            tuple(r.ap for r in records)
            + (summary["n"], summary["mean"], summary["std"], summary["cov_inv"]),
        )
    )
  ap_table = Table(
      title="AP (%) per test set; mean, population std, CoV^-1 = mean/std " "(section III-C).",
      row_label="Level",
      columns=tuple(map(Column, [*tests, "n", "mean", "std", "CoV^-1"])),
      rows=tuple(rows),
      notes=(_protocol_note(next(iter(by_level.values())), exclude_in_domain),),
  )
  return "\n".join(
      [
          f"# {saved['model']} trained on {saved['train']}",
          "",
          to_markdown(ap_table),
          to_markdown(_all_metrics_table(saved)),
      ]
  )


def _all_metrics_table(saved):
  names = ("ap", "roc_auc", "eer", "accuracy")
  rows = []
  for test, result in saved["test_sets"].items():
    for level in LEVELS:
      if level in result:
        m = result[level]
        rows.append(
            (
                f"{test} ({level})",
                tuple(None if m[k] is None else 100.0 * m[k] for k in names)
                + (m["num_examples"], m["num_fake"], m["num_real"]),
            )
        )
  threshold = saved["test_sets"][next(iter(saved["test_sets"]))].get("threshold", 0.5)
  columns = ("AP", "ROC-AUC", "EER", f"accuracy@{threshold:g}", "examples", "fake", "real")
  has_videos = any("video" in result for result in saved["test_sets"].values())
  return Table(
      title="All metrics (%)" + ("; examples are videos at video level" if has_videos else ""),
      row_label="Test set",
      columns=tuple(map(Column, columns)),
      rows=tuple(rows),
  )


def write_tables(records, out_dir, *, exclude_in_domain=False, reference=None):
  """Writes tables.md, tables.tex, ap_table.csv, summary.csv and ap_long.csv to out_dir.

  Returns the Markdown text.
  """
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  table = comparison_table(records, exclude_in_domain=exclude_in_domain, reference=reference)
  several_trains = len(_unique(r.train for r in records)) > 1
  matrices = [
      model_matrix(records, model) for model in _unique(r.model for r in records) if several_trains
  ]
  markdown = "\n".join(to_markdown(t) for t in [table, *matrices])
  fileio.atomic_write_text(out_dir / "tables.md", markdown)
  latex = "\n".join(to_latex(t) for t in [table, *matrices])
  fileio.atomic_write_text(out_dir / "tables.tex", latex)
  fileio.atomic_write_text(out_dir / "ap_table.csv", to_csv(table))
  fileio.atomic_write_text(out_dir / "summary.csv", _summary_csv(records, exclude_in_domain))
  fileio.atomic_write_text(out_dir / "ap_long.csv", long_csv(records))
  return markdown


def long_csv(records):
  """The records as a long-format CSV (model,train,test,ap,level): readable by read_long_csv."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow([*LONG_COLUMNS, "level"])
  writer.writerows([r.model, r.train, r.test, repr(r.ap), r.level] for r in records)
  return out.getvalue()


def _summary_csv(records, exclude_in_domain):
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["model", "n", "mean", "std", "cov_inv"])
  for model, s in summarize(records, exclude_in_domain=exclude_in_domain).items():
    writer.writerow(
        [
            model,
            s["n"],
            repr(s["mean"]),
            repr(s["std"]),
            "" if s["cov_inv"] is None else repr(s["cov_inv"]),
        ]
    )
  return out.getvalue()


# ----------------------------------------------------------------------------- helpers


def _read_json(path):
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file")
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from e


def _lookup(tree, keys, path):
  node = tree
  for depth, key in enumerate(keys):
    if not isinstance(node, dict) or key not in node:
      raise ValueError(f"{path}: missing key {'.'.join(keys[:depth + 1])!r}")
    node = node[key]
  return node


def _names(row, source):
  names = tuple((row[c] or "").strip() for c in ("model", "train", "test"))
  if not all(names):
    raise ValueError(f"{source}: empty model, train or test name in {dict(row)}")
  return names


def _parse_number(text, source, column):
  try:
    return float(text)
  except (TypeError, ValueError):
    raise ValueError(f"{source}: column {column!r} is not a number: {text!r}") from None


def _is_fraction_scale(values, ap_scale):
  if ap_scale not in ("auto", "percent", "fraction"):
    raise ValueError(f"ap_scale={ap_scale!r} is not one of auto, percent, fraction")
  if ap_scale == "auto":
    return bool(values) and max(values) <= 1.0
  return ap_scale == "fraction"


def _checked_percent(value, source):
  if not 0.0 <= value <= 100.0:
    raise ValueError(f"{source}: AP {value:g}% is outside [0, 100]")
  return value


def _unique(items):
  return list(dict.fromkeys(items))


# ----------------------------------------------------------------------------- command line


def _define_flags():
  """Defined only when run as a program, so importing this module defines no flags."""
  flags.DEFINE_multi_string("csv", [], "Long-format CSV(s) with columns model,train,test,ap.")
  flags.DEFINE_string(
      "out",
      None,
      "Folder for tables.md, tables.tex, ap_table.csv, "
      "summary.csv, ap_long.csv. Without it, Markdown goes to stdout only.",
  )
  flags.DEFINE_bool(
      "exclude-in-domain",
      False,
      "Leave the test set equal to the training set out of mean/std/CoV^-1 "
      "(Table I's protocol; Table II includes it).",
  )
  flags.DEFINE_enum(
      "level",
      "auto",
      ["auto", *LEVELS],
      "Evaluation level of run results; auto: video where every test set has " "video ids.",
  )
  flags.DEFINE_bool(
      "from-scores", False, "Recompute the metrics of runs from results/scores/*.npz."
  )
  flags.DEFINE_float("threshold", 0.5, "Accuracy threshold with --from-scores.")
  flags.DEFINE_enum(
      "video-aggregation",
      "mean",
      sorted(metrics.VIDEO_AGGREGATIONS),
      "How frame scores of a video are combined, with --from-scores.",
  )
  flags.DEFINE_enum(
      "ap-scale",
      "auto",
      ["auto", "percent", "fraction"],
      "Unit of the CSV's ap column; auto: fraction when every AP <= 1.",
  )
  flags.DEFINE_string(
      "reference", None, "CSV model,mean,std,cov_inv (e.g. the paper's) to show beside ours."
  )


def main(argv):
  f = flags.FLAGS
  run_paths = argv[1:]
  if not run_paths and not f.csv:
    sys.exit("agg_jax.tables: give run directories and/or --csv=FILE")
  try:
    records = load_runs(
        run_paths,
        level=f.level,
        from_scores=f["from-scores"].value,
        threshold=f.threshold,
        video_aggregation=f["video-aggregation"].value,
    )
    for path in f.csv:
      records += read_long_csv(path, ap_scale=f["ap-scale"].value)
    check_unique(records)
    reference = read_reference(f.reference) if f.reference else None
    exclude = f["exclude-in-domain"].value
    if f.out:
      markdown = write_tables(records, f.out, exclude_in_domain=exclude, reference=reference)
    else:
      markdown = to_markdown(
          comparison_table(records, exclude_in_domain=exclude, reference=reference)
      )
  except (OSError, ValueError) as e:
    sys.exit(f"agg_jax.tables: {e}")
  print(markdown)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
