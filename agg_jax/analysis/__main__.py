"""AP_deg (eq. 5) over the (train, test) experiments of several analysed runs.

The paper's Figures 7 and 8 pool the experiments of its four FaceForensics++ models; each run's
`--mode=analyze` wrote its own experiments to RUN/analysis/trimming.csv, and this command pools
them: a Markdown table on stdout and, with --out, the pooled CSVs and figures.

  python -m agg_jax.analysis runs/ff_df runs/ff_f2f runs/ff_fs runs/ff_nt --out=trimming/

Budgets N that some run lacks (another backbone's "all") are left out and named.
"""


from absl import flags

from agg_jax import cli, fileio
from agg_jax.analysis import trimming

PROG = "agg_jax.analysis"
FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Folder for trimming.csv, trimming_summary.csv and Figures 7-8.")


def pooled_rows(runs: list[str]) -> tuple[list[dict], list[int]]:
  """Every run's trimming rows, restricted to the budgets all runs have; and the ones left out."""
  per_run = []
  for workdir in runs:
    path = fileio.path(workdir) / "analysis" / "trimming.csv"
    if not path.is_file():
      raise cli.UsageError(f"{path}: no trimming table; run `python -m agg_jax.main "
                           f"--workdir={workdir} --mode=analyze` first")
    try:
      per_run.append(trimming.read_csv(path))
    except (KeyError, ValueError) as e:
      raise cli.UsageError(f"{path}: not a trimming table ({e})") from None
  shared = set.intersection(*({row["size"] for row in rows} for rows in per_run))
  dropped = sorted(set().union(*({row["size"] for row in rows} for rows in per_run)) - shared)
  return [row for rows in per_run for row in rows if row["size"] in shared], dropped


def main(argv: list[str]) -> int:
  runs = argv[1:]
  if not runs:
    raise cli.UsageError("give one or more analysed run directories")
  rows, dropped = pooled_rows(runs)
  summary = trimming.summarize(rows)
  print("| variant | N | experiments | analysis params | AP_deg (points) |")
  print("| --- | ---: | ---: | ---: | ---: |")
  for row in summary:
    print(f"| {row['variant']} | {row['size']} | {row['experiments']} | "
          f"{row['analysis_params']:,} | {row['ap_deg']:.4f} |")
  if dropped:
    print(f"\nbudgets N={dropped} are left out: not every run has them")
  if FLAGS.out:
    out = fileio.path(FLAGS.out)
    trimming.write_csv(out / "trimming.csv", rows)
    trimming.write_csv(out / "trimming_summary.csv", summary)
    for variant in trimming.VARIANTS:
      trimming.experiments_chart(out / f"trimming_experiments_{variant}.png", rows, variant)
    trimming.degradation_chart(out / "trimming_degradation.png", summary)
    print(f"\nwritten to {out}")
  return cli.EXIT_OK


if __name__ == "__main__":
  cli.run(main, PROG)
