r"""The paper's tables from saved results: AP per test set, mean, std and CoV^-1 (section III-C).

Scores are the source of truth and tables are views of them: the inputs are run directories
written by evaluation (config.json, results/metrics.json, results/scores/<test>.npz) or
long-format CSV files (model,train,test,ap), never a model.

The comparison table has one row per model and one column per (training set, test set) pair,
grouped by training set: Table I's layout for one training set, Table II's (left) for several.
Beside it: mean, population std and CoV^-1 = mean / std of the model's APs. Table II averages
all 16 pairs; Table I leaves the training set out (`--exclude-in-domain`; its column is then
marked †). Best value per column in bold; a summary column compares only the rows whose summary
covers every cell. `--out=DIR` writes tables.md, tables.tex, ap_table.csv, summary.csv and
ap_long.csv (readable by --csv).

One job per module:
  records    the inputs as ApRecords: run directories and CSV files
  summaries  mean/std/CoV^-1 and the tables as data (Column, Table), best cells, notes
  render     Markdown, LaTeX and CSV text
  files      a run's results/ap.csv and summary.md; the --out folder
  __main__   the command line:

  python -m agg_jax.tables runs/ff_df runs/ff_nt --out=tables/
  python -m agg_jax.tables --csv=tests/data/paper_table1.csv --exclude-in-domain \
      --reference=tests/data/paper_table1_summary.csv
"""

from agg_jax.tables.files import long_csv, write_run_tables, write_tables
from agg_jax.tables.records import (
    LEVELS,
    LONG_COLUMNS,
    REFERENCE_COLUMNS,
    ApRecord,
    check_unique,
    find_results_dir,
    load_runs,
    metrics_from_scores,
    read_long_csv,
    read_metrics_json,
    read_reference,
    run_identity,
    run_levels,
    run_records,
)
from agg_jax.tables.render import to_csv, to_latex, to_markdown
from agg_jax.tables.summaries import (
    IN_DOMAIN_MARK,
    SUMMARY_COLUMNS,
    Column,
    Table,
    comparison_table,
    model_matrix,
    summarize,
)

__all__ = [
    "LEVELS",
    "LONG_COLUMNS",
    "REFERENCE_COLUMNS",
    "ApRecord",
    "check_unique",
    "find_results_dir",
    "load_runs",
    "metrics_from_scores",
    "read_long_csv",
    "read_metrics_json",
    "read_reference",
    "run_identity",
    "run_levels",
    "run_records",
    "to_csv",
    "to_latex",
    "to_markdown",
    "IN_DOMAIN_MARK",
    "SUMMARY_COLUMNS",
    "Column",
    "Table",
    "comparison_table",
    "model_matrix",
    "summarize",
    "long_csv",
    "write_run_tables",
    "write_tables",
]
