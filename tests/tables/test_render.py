"""Tests of agg_jax.tables.render: Markdown, LaTeX and CSV text, best cells and in-domain marks."""

from pathlib import Path

from agg_jax import tables

DATA = Path(__file__).parents[1] / "data"


def _small_records():
  return [
      tables.ApRecord("A & B", "X", "X", 99.0),
      tables.ApRecord("A & B", "X", "Y", 60.0),
      tables.ApRecord("C_1", "X", "X", 95.0),
      tables.ApRecord("C_1", "X", "Y", 80.0),
  ]


def _paper_table(table, **options):
  records = tables.read_long_csv(DATA / f"paper_table{table}.csv")
  return tables.comparison_table(records, **options)


def test_markdown_marks_best_per_column():
  table = tables.comparison_table(_small_records())
  lines = tables.to_markdown(table).splitlines()
  assert "| A & B | **99.00** | 60.00 | 2 | 79.50 | 19.50 | 4.08 |" in lines
  assert "| C_1 | 95.00 | **80.00** | 2 | **87.50** | **7.50** | **11.67** |" in lines


def test_latex_escapes_and_marks():
  latex = tables.to_latex(tables.comparison_table(_small_records()))
  assert r"A \& B & \textbf{99.00} & 60.00" in latex and r"C\_1" in latex
  assert r"CoV$^{-1}$" in latex and r"\begin{tabular}{lrrrrrr}" in latex


# ----------------------------------------------------------------------------- in-domain marks


def test_excluded_in_domain_column_is_marked_in_every_format():
  table = _paper_table(1, exclude_in_domain=True)
  markdown = tables.to_markdown(table).splitlines()
  assert markdown[2].startswith("| Model | CelebA-HQ/PGAN† | CelebA-HQ/SGAN | CelebA-HQ/Glow |")
  # 100.00 is the column's highest value; the column is not compared, so nothing is bold.
  assert "| Resnet Layer 1 | 100.00 | 97.22 | 72.80 | 80.69 | 99.81 |" in markdown[4]
  assert "| Ours | 100.00 | 97.06 | 87.82 | 89.19 | 99.77 | 81.15 | 76.22 | 6 | 88.54 | " in (
      markdown[17]
  )
  assert markdown[-1] == (
      "† In-domain test (test set = training set): shown, but excluded from n, mean, std and "
      "CoV^-1 (as Table I) and never marked best."
  )
  latex = tables.to_latex(table).splitlines()
  assert latex[4].startswith(r"Model & CelebA-HQ/PGAN$^\dagger$ & CelebA-HQ/SGAN & ")
  assert latex[6].startswith(r"Resnet Layer 1 & 100.00 & 97.22 & 72.80 & ")
  assert r"$^\dagger$ In-domain test (test set = training set): shown, but excluded" in latex[-2]
  assert tables.to_csv(table).splitlines()[0] == (
      "Model,CelebA-HQ/PGAN†,CelebA-HQ/SGAN,CelebA-HQ/Glow,CelebA-HQ/GMM,FFHQ/PGAN,FFHQ/SGAN,"
      "FFHQ/SGAN2,n,mean,std,CoV^-1"
  )


def test_in_domain_columns_of_several_training_sets_are_marked():
  records = _small_records() + [
      tables.ApRecord("A & B", "Y", "X", 70.0),
      tables.ApRecord("A & B", "Y", "Y", 97.0),
      tables.ApRecord("C_1", "Y", "X", 75.0),
      tables.ApRecord("C_1", "Y", "Y", 98.0),
  ]
  table = tables.comparison_table(records, exclude_in_domain=True)
  markdown = tables.to_markdown(table).splitlines()
  assert markdown[2] == "| Model | X→X† | X→Y | Y→X | Y→Y† | n | mean | std | CoV^-1 |"
  # 99.00 and 98.00 are their columns' highest values, but in-domain: never bold.
  assert markdown[4] == "| A & B | 99.00 | 60.00 | 70.00 | 97.00 | 2 | 65.00 | 5.00 | 13.00 |"
  assert markdown[5] == (
      "| C_1 | 95.00 | **80.00** | **75.00** | 98.00 | 2 | **77.50** | **2.50** | **31.00** |"
  )
  latex = tables.to_latex(table)
  assert r"Model & X$^\dagger$ & Y & X & Y$^\dagger$ & n & mean & std & CoV$^{-1}$ \\" in latex
  assert r"A \& B & 99.00 & 60.00 & 70.00 & 97.00 & 2 & 65.00 & 5.00 & 13.00 \\" in latex


def test_included_in_domain_column_is_neither_marked_nor_excluded():
  table = _paper_table(1)
  markdown = tables.to_markdown(table).splitlines()
  assert markdown[2].startswith("| Model | CelebA-HQ/PGAN | CelebA-HQ/SGAN |")
  assert markdown[4].startswith("| Resnet Layer 1 | **100.00** | 97.22 |")
  assert "†" not in tables.to_markdown(table) + tables.to_latex(table) + tables.to_csv(table)


# ----------------------------------------------------------------------------- best summaries


def test_incomplete_rows_are_never_best_in_summary_columns():
  table = _paper_table(2)
  markdown = tables.to_markdown(table).splitlines()
  ours = markdown[-5]
  assert ours == (
      "| Ours | 99.14 | 77.17 | 67.38 | **59.00** | **84.88** | **97.26** | 71.59 | **56.92** | "
      + "– | " * 8
      + "8 | 76.67 | 15.05 | 5.10 |"
  )
  assert markdown[-6].endswith("| 98.20 | 15 | 70.34 | 17.00 | 4.14 |")  # CNN (p=0.5)
  assert markdown[13].startswith("| Xception++ |")
  assert markdown[13].endswith("| **99.47** | 16 | **75.66** | 16.87 | 4.48 |")
  assert markdown[5].startswith("| Xception Block 1 |")
  assert markdown[5].endswith("| 82.80 | 16 | 68.75 | **14.11** | **4.87** |")
  assert markdown[-1] == (
      "Missing cells (–): CNN (p=0.5) (15 of 16), Ours (8 of 16). The summaries of CNN (p=0.5), "
      "Ours cover fewer tests: they do not compare with the others and are never marked best."
  )
  latex = tables.to_latex(table)
  assert r" & -- & -- & 8 & 76.67 & 15.05 & 5.10 \\" in latex
  assert r" & \textbf{99.47} & 16 & \textbf{75.66} & 16.87 & 4.48 \\" in latex
  assert r" & 82.80 & 16 & 68.75 & \textbf{14.11} & \textbf{4.87} \\" in latex
