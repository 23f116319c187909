r"""The comparison table of runs and/or long-format CSVs: Markdown on stdout, all formats in --out.

  python -m agg_jax.tables runs/ff_df runs/ff_nt --out=tables/
  python -m agg_jax.tables --csv=tests/data/paper_table1.csv --exclude-in-domain \
      --reference=tests/data/paper_table1_summary.csv

A usage mistake (no inputs, a missing or unreadable file) is one line on stderr and status 2.
"""

from absl import flags

from agg_jax import cli, metrics
from agg_jax.tables.files import write_tables
from agg_jax.tables.records import LEVELS, check_unique, load_runs, read_long_csv, read_reference
from agg_jax.tables.render import to_markdown
from agg_jax.tables.summaries import comparison_table

PROG = "agg_jax.tables"

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
    "Evaluation level of run results; auto: video where every test set has video ids.",
)
flags.DEFINE_bool("from-scores", False, "Recompute the metrics of runs from results/scores/*.npz.")
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
    raise cli.UsageError("no inputs: give run directories and/or --csv=FILE")
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
  except (OSError, ValueError) as e:  # every reader names the file and what is wrong with it
    raise cli.UsageError(str(e)) from e
  print(markdown)


if __name__ == "__main__":
  cli.run(main, PROG)
