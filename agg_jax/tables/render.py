"""Tables as text: Markdown and LaTeX (best values in bold) and CSV (plain numbers)."""

import csv
import io


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
  """Rows of formatted cells, the table's best cells marked."""
  for i, (name, cells) in enumerate(table.rows):
    texts = [escape(_format(value)) for value in cells]
    yield name, [mark(text) if (i, j) in table.best_cells else text for j, text in enumerate(texts)]


def _format(value):
  if value is None:
    return "–"
  if isinstance(value, float):
    return f"{value:.2f}"
  return str(value)


def _csv_value(value):
  return f"{value:.4f}" if isinstance(value, float) else str(value)


def _has_groups(table):
  return len({c.group for c in table.columns if c.group}) > 1


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
    "†": r"$^\dagger$",
}


def _latex_bold(text):
  return f"\\textbf{{{text}}}"


def _latex_escape(text):
  """Escapes LaTeX's special characters; "^-1" (as in CoV^-1) becomes a superscript."""
  parts = ("".join(_LATEX_SPECIALS.get(ch, ch) for ch in part) for part in str(text).split("^-1"))
  return "$^{-1}$".join(parts)
