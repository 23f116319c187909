"""agg_jax.analysis.report: the HTML page, and the page as headless Chromium shows it."""

import html.parser

import numpy as np
import pytest

from agg_jax.analysis import plotting
from agg_jax.analysis.report import Figure, Section, Table, format_cell, render, write_report
from tests.analysis.page_check import check_page, requires_browser


class _Collector(html.parser.HTMLParser):
  """The tags (with attributes) and the text of a page, as a browser's parser sees them."""

  def __init__(self):
    super().__init__()
    self.tags, self.text = [], []

  def handle_starttag(self, tag, attrs):
    self.tags.append((tag, dict(attrs)))

  def handle_data(self, data):
    self.text.append(data)


def parse(page: str) -> _Collector:
  collector = _Collector()
  collector.feed(page)
  return collector


def test_text_is_escaped():
  evil = '<script>alert("x")</script> & <b>'
  page = render(evil, [Section(evil, paragraphs=[evil],
                               tables=[Table([evil], [[evil]], caption=evil)],
                               figures=[Figure("a b&c.png", evil)])], subtitle=evil)
  parsed = parse(page)
  assert "script" not in [tag for tag, _ in parsed.tags]
  assert "b" not in [tag for tag, _ in parsed.tags]
  assert sum(evil in text for text in parsed.text) >= 6  # title, h1, subtitle, toc, h2, p, ...
  img = next(attrs for tag, attrs in parsed.tags if tag == "img")
  assert img["alt"] == evil
  assert img["src"] == "a%20b%26c.png"
  assert img["loading"] != "lazy"


def test_document_shape():
  page = render("Run", [Section("A")])
  assert page.startswith("<!DOCTYPE html>")
  tags = [tag for tag, _ in parse(page).tags]
  assert '<meta charset="utf-8">' in page
  assert "style" in tags and "script" not in tags and "link" not in tags  # inline CSS only
  assert "http://" not in page and "https://" not in page  # nothing fetched from the network


def test_table_rendering():
  table = Table(["set", "AP", "n", "note"],
                [["celeb-df", 0.912345, 120, None],
                 ["dfdc", np.float32(0.5), np.int64(40), "one class"],
                 ["big", 123456.7, 3, 1e-7]], caption="Per test set")
  parsed = parse(render("R", [Section("Metrics", tables=[table])]))
  cells = [(tag, attrs.get("class")) for tag, attrs in parsed.tags if tag in ("th", "td")]
  text = [t for t in parsed.text if t.strip()]
  for name in table.header:
    assert name in text
  assert "Per test set" in text
  assert [t for t in text if t in ("0.9123", "0.5", "120", "40", "123457", "\u2014")] == [
      "0.9123", "120", "\u2014", "0.5", "40", "123457"]
  assert "1e-07" in text
  # Numeric columns (AP, n) are right-aligned, header included; text columns are not.
  assert cells[:4] == [("th", None), ("th", "num"), ("th", "num"), ("th", None)]
  assert cells[4:8] == [("td", None), ("td", "num"), ("td", "num"), ("td", None)]


def test_format_cell():
  assert format_cell(0.123456) == "0.1235"
  assert format_cell(2.0) == "2"
  assert format_cell(12345.6) == "12346"
  assert format_cell(float("nan")) == "nan"
  assert format_cell(7) == "7" and format_cell(True) == "True"
  assert format_cell("0.123456") == "0.123456"  # a string is kept as given
  assert format_cell(None) == "\u2014"


def test_ragged_table_raises():
  with pytest.raises(ValueError, match="row 1 has 1 cells for 2 columns"):
    render("R", [Section("S", tables=[Table(["a", "b"], [[1, 2], [3]])])])


def test_toc_links_to_sections():
  sections = [Section("ROC curves"), Section("Scores / video"), Section("ROC curves"),
              Section("???")]
  parsed = parse(render("R", sections))
  ids = [attrs["id"] for tag, attrs in parsed.tags if tag == "section"]
  links = [attrs["href"] for tag, attrs in parsed.tags if tag == "a"]
  assert ids == ["roc-curves", "scores-video", "roc-curves-2", "section-4"]
  assert links == ["#" + anchor for anchor in ids]


def test_missing_figure_names_the_file(tmp_path):
  sections = [Section("S", figures=[Figure("roc_curves.png", "ROC")])]
  with pytest.raises(FileNotFoundError, match="roc_curves.png"):
    write_report(tmp_path, "R", sections)
  assert not (tmp_path / "report.html").exists()
  with pytest.raises(ValueError, match="relative"):
    write_report(tmp_path, "R", [Section("S", figures=[Figure("../x.png", "X")])])


def _small_report(folder):
  """A report of one table and two real matplotlib figures (one in a subfolder)."""
  fig, ax = plotting.figure(5, 3)
  ax.plot([0, 0.1, 1], [0, 0.8, 1], color=plotting.FAKE_COLOR)
  ax.set(xlabel="false positive rate", ylabel="true positive rate")
  plotting.save_figure(fig, folder / "roc.png")
  fig, ax = plotting.figure(5, 3)
  ax.hist(np.random.default_rng(0).beta(2, 5, 300), bins=20, color=plotting.REAL_COLOR)
  plotting.save_figure(fig, folder / "figures" / "scores hist.png")
  sections = [
      Section("Metrics", paragraphs=["Video level, mean of frame scores."],
              tables=[Table(["test set", "AP", "AUC", "videos"],
                            [["celeb-df", 0.91234, 0.88, 120], ["dfdc", None, 0.5, 40]],
                            caption="Per test set")]),
      Section("Curves", figures=[Figure("roc.png", "ROC <celeb-df>"),
                                 Figure("figures/scores hist.png", "Score histogram")]),
  ]
  return write_report(folder, "Run analysis", sections, subtitle="runs/demo")


@requires_browser
def test_report_in_browser(tmp_path):
  path = _small_report(tmp_path)
  result = check_page(path, tmp_path / "screenshot.png")
  assert result["errors"] == []
  assert result["images"] == 2 and result["broken_images"] == []
  assert result["title"] == "Run analysis"
  assert result["headings"] == ["Run analysis", "Metrics", "Curves"]
  data = result["screenshot"].read_bytes()
  assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
  from PIL import Image  # pylint: disable=import-outside-toplevel  (matplotlib's dependency)
  with Image.open(result["screenshot"]) as image:
    image.load()
    assert image.width >= 1000 and image.height >= 600


@requires_browser
def test_page_check_sees_a_broken_image(tmp_path):
  """The browser check is not vacuous: a figure deleted after writing shows up."""
  path = _small_report(tmp_path)
  (tmp_path / "roc.png").unlink()
  result = check_page(path, tmp_path / "screenshot.png")
  assert result["broken_images"] == ["roc.png"]
  assert any("roc.png" in error for error in result["errors"]), result["errors"]
