"""The analysis report: one self-contained HTML page with a run's tables and figures.

`python -m agg_jax.main --workdir=RUN --mode=analyze` writes `RUN/analysis/report.html` beside
the CSVs and PNG figures it shows. The page reads offline: inline CSS, no JavaScript, images by
relative file names in the same folder. A section renders its paragraphs, then its tables, then
its figures:

  section = Section("ROC curves", paragraphs=["Video level."],
                    tables=[Table(["test set", "AUC"], [["celeb-df", 0.91234]])],
                    figures=[Figure("roc.png", "ROC per test set")])
  write_report("RUN/analysis", "Run analysis", [section], subtitle="RUN")
"""

import dataclasses
import html
import math
import numbers
import os
import re
import urllib.parse
from pathlib import Path

from etils import epath

from agg_jax import fileio

REPORT_FILE = "report.html"
MISSING = "\u2014"  # an em dash for a missing value (None, e.g. AP of a one-class test set)


@dataclasses.dataclass
class Table:
  """A table: `rows` of cells (numbers, strings or None), one cell per `header` column."""
  header: list[str]
  rows: list[list]
  caption: str = ""


@dataclasses.dataclass
class Figure:
  """An image file, relative to the report's folder, with its caption (also its alt text)."""
  file: str
  caption: str


@dataclasses.dataclass
class Section:
  """A titled part of the report: paragraphs, then tables, then figures."""
  title: str
  paragraphs: list[str] = dataclasses.field(default_factory=list)
  tables: list[Table] = dataclasses.field(default_factory=list)
  figures: list[Figure] = dataclasses.field(default_factory=list)


STYLE = """
:root { color-scheme: light; }
body { margin: 0; background: #f6f7f9; color: #1d2330;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; background: #fff;
  min-height: 100vh; box-sizing: border-box; box-shadow: 0 0 0 1px #e3e6eb; }
header { border-bottom: 2px solid #2f5d8a; margin-bottom: 16px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.1em; }
.subtitle { color: #5a6372; margin: 0 0 12px; }
h2 { font-size: 1.3em; margin: 1.8em 0 0.6em; padding-bottom: 4px;
  border-bottom: 1px solid #dde1e7; }
nav.toc { background: #f1f4f8; border: 1px solid #dde1e7; border-radius: 6px;
  padding: 10px 16px; display: inline-block; min-width: 260px; }
nav.toc strong { display: block; margin-bottom: 4px; }
nav.toc ol { margin: 0; padding-left: 1.4em; }
a { color: #2f5d8a; text-decoration: none; }
a:hover { text-decoration: underline; }
.table-wrap { overflow-x: auto; margin: 12px 0 20px; }
table { border-collapse: collapse; font-size: 0.93em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0 0 6px; }
th, td { border: 1px solid #cfd5dd; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #e9eef4; font-weight: 600; }
tbody tr:nth-child(even) { background: #f7f9fb; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 16px 0 28px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #e3e6eb; }
figcaption { color: #5a6372; font-size: 0.92em; margin-top: 6px; }
"""


def format_cell(value) -> str:
  """A cell's text: floats to 4 significant digits (whole numbers from 10^4 on), None as a dash,
  anything else (strings included) as str()."""
  if value is None:
    return MISSING
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    return str(value)
  if isinstance(value, numbers.Integral):
    return str(int(value))
  value = float(value)
  if math.isfinite(value) and 1e4 <= abs(value) < 1e15:
    return f"{value:.0f}"
  return f"{value:.4g}"


def _is_number(value) -> bool:
  if isinstance(value, bool):
    return False
  if isinstance(value, numbers.Real):
    return True
  if isinstance(value, str):
    try:
      float(value)
      return True
    except ValueError:
      return False
  return False


def _numeric_columns(table: Table) -> list[bool]:
  """Which columns hold numbers only (missing values aside): they are right-aligned."""
  numeric = []
  for column in range(len(table.header)):
    cells = [row[column] for row in table.rows if row[column] not in (None, "", MISSING)]
    numeric.append(bool(cells) and all(_is_number(cell) for cell in cells))
  return numeric


def _table_html(table: Table) -> str:
  for i, row in enumerate(table.rows):
    if len(row) != len(table.header):
      raise ValueError(f"table {table.caption!r}: row {i} has {len(row)} cells for "
                       f"{len(table.header)} columns")
  numeric = _numeric_columns(table)

  def cls(column):
    return ' class="num"' if numeric[column] else ""

  lines = ['<div class="table-wrap"><table>']
  if table.caption:
    lines.append(f"<caption>{html.escape(table.caption)}</caption>")
  lines.append("<thead><tr>" + "".join(f"<th{cls(c)}>{html.escape(str(name))}</th>"
                                        for c, name in enumerate(table.header)) + "</tr></thead>")
  lines.append("<tbody>")
  for row in table.rows:
    lines.append("<tr>" + "".join(f"<td{cls(c)}>{html.escape(format_cell(cell))}</td>"
                                  for c, cell in enumerate(row)) + "</tr>")
  lines.append("</tbody></table></div>")
  return "\n".join(lines)


def _figure_html(figure: Figure) -> str:
  src = html.escape(urllib.parse.quote(Path(figure.file).as_posix()))
  caption = html.escape(figure.caption)
  return (f'<figure><img src="{src}" alt="{caption}" loading="eager">'
          f"<figcaption>{caption}</figcaption></figure>")


def anchors(sections: list[Section]) -> list[str]:
  """The HTML ids of the sections: their titles as lowercase slugs, made unique."""
  ids, seen = [], set()
  for i, section in enumerate(sections, 1):
    slug = re.sub(r"[^a-z0-9]+", "-", section.title.lower()).strip("-") or f"section-{i}"
    anchor, n = slug, 2
    while anchor in seen:
      anchor, n = f"{slug}-{n}", n + 1
    seen.add(anchor)
    ids.append(anchor)
  return ids


def render(title: str, sections: list[Section], subtitle: str = "") -> str:
  """The report as a complete HTML5 document (all text escaped, inline CSS, no scripts)."""
  ids = anchors(sections)
  parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title>", f"<style>{STYLE}</style>", "</head>",
           "<body>", "<main>", "<header>", f"<h1>{html.escape(title)}</h1>"]
  if subtitle:
    parts.append(f'<p class="subtitle">{html.escape(subtitle)}</p>')
  parts.append("</header>")
  if sections:
    parts.append('<nav class="toc"><strong>Contents</strong><ol>')
    parts += [f'<li><a href="#{anchor}">{html.escape(section.title)}</a></li>'
              for anchor, section in zip(ids, sections)]
    parts.append("</ol></nav>")
  for anchor, section in zip(ids, sections):
    parts.append(f'<section id="{anchor}">')
    parts.append(f"<h2>{html.escape(section.title)}</h2>")
    parts += [f"<p>{html.escape(paragraph)}</p>" for paragraph in section.paragraphs]
    parts += [_table_html(table) for table in section.tables]
    parts += [_figure_html(figure) for figure in section.figures]
    parts.append("</section>")
  parts += ["</main>", "</body>", "</html>", ""]
  return "\n".join(parts)


def write_report(folder: str | os.PathLike, title: str, sections: list[Section],
                 subtitle: str = "") -> epath.Path:
  """Writes `folder/report.html` atomically and returns its path.

  Every figure must be a file inside `folder`, named relative to it: otherwise ValueError (an
  absolute or `..` path) or FileNotFoundError naming the missing file, and nothing is written.
  """
  folder = fileio.path(folder)
  for section in sections:
    for figure in section.figures:
      relative = Path(figure.file)
      if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"figure {figure.file!r} of section {section.title!r} must be a path "
                         f"relative to the report's folder {folder}, inside it")
      if not (folder / relative).is_file():
        raise FileNotFoundError(f"figure {figure.file!r} of section {section.title!r} not "
                                f"found: {folder / relative}")
  path = folder / REPORT_FILE
  fileio.atomic_write_text(path, render(title, sections, subtitle))
  return path
