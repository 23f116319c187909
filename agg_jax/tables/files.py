"""The tables as files: a run's results/ap.csv and summary.md, and the comparison's --out folder."""

import csv
import io

from agg_jax import fileio, run
from agg_jax.tables.records import (
    LEVELS,
    LONG_COLUMNS,
    find_results_dir,
    read_metrics_json,
    run_levels,
    run_records,
)
from agg_jax.tables.render import to_csv, to_latex, to_markdown
from agg_jax.tables.summaries import (
    Column,
    Table,
    ap_label,
    comparison_table,
    distinct,
    model_matrix,
    protocol_note,
    summarize,
)


def write_run_tables(results_dir, *, exclude_in_domain=False):
  """Writes results_dir/ap.csv and results_dir/summary.md from results_dir/metrics.json.

  ap.csv: one row, model, train, AP (%) per test set, mean, std, cov_inv at the run's default
  level (video when every test set has video ids). summary.md: the run's own table (AP per test
  set at each level, mean, population std, CoV^-1) and every metric per test set. With
  exclude_in_domain the training set's own test is marked † and left out of the summary.
  """
  results_dir = find_results_dir(results_dir)
  saved = read_metrics_json(results_dir)
  source = str(results_dir / run.METRICS)
  levels = run_levels(saved["test_sets"], source)
  by_level = {
      level: run_records(
          saved["model"], saved["train"], saved["test_sets"], level=level, source=source
      )
      for level in levels
  }
  default = by_level[levels[0]]
  summary = summarize(default, exclude_in_domain=exclude_in_domain)[saved["model"]]
  labels = ["train", *_test_labels(default, exclude_in_domain), "mean", "std", "cov_inv"]
  values = [saved["train"], *(r.ap for r in default)]
  values += [summary["mean"], summary["std"], summary["cov_inv"]]
  ap_table = Table(
      title="",
      row_label="model",
      columns=tuple(map(Column, labels)),
      rows=((saved["model"], tuple(values)),),
  )
  fileio.atomic_write_text(results_dir / run.AP_CSV, to_csv(ap_table))
  fileio.atomic_write_text(
      results_dir / run.SUMMARY,
      _run_summary_markdown(saved, by_level, exclude_in_domain=exclude_in_domain),
  )


def write_tables(records, out_dir, *, exclude_in_domain=False, reference=None):
  """Writes tables.md, tables.tex, ap_table.csv, summary.csv and ap_long.csv to out_dir.

  Returns the Markdown text.
  """
  out_dir = fileio.path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  table = comparison_table(records, exclude_in_domain=exclude_in_domain, reference=reference)
  several_trains = len({r.train for r in records}) > 1
  matrices = [
      model_matrix(records, model) for model in distinct(r.model for r in records) if several_trains
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
  """model,n,mean,std,cov_inv at full precision (repr), cov_inv empty when undefined."""
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


def _test_labels(records, exclude_in_domain):
  return [ap_label(r.train, r.test, exclude_in_domain) for r in records]


def _run_summary_markdown(saved, by_level, *, exclude_in_domain):
  default = next(iter(by_level.values()))
  labels = _test_labels(default, exclude_in_domain)
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
      title="AP (%) per test set; mean, population std, CoV^-1 = mean/std (section III-C).",
      row_label="Level",
      columns=tuple(map(Column, [*labels, "n", "mean", "std", "CoV^-1"])),
      rows=tuple(rows),
      notes=(protocol_note(default, exclude_in_domain),),
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
