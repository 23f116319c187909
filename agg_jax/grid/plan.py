"""A grid from start to page: the shortcut audit of each control, every cell (skipping those
done), the comparison of the heads and the report (`python -m agg_jax.grid`)."""

import dataclasses
import json
import os
import shutil
import time

import numpy as np

from agg_jax import fileio, run
from agg_jax.grid import cells as cells_lib
from agg_jax.grid import compare, report


@dataclasses.dataclass
class Grid:
  config_file: str
  module: object  # the config file as a module
  out: str
  controls: dict  # name -> config overrides
  heads: list
  methods: list
  seeds: list
  settings: dict  # overrides every cell shares
  manual_dir: str | None = None
  unseen_real: str | None = "amfd"
  replicates: int = 1000
  grid_command: str = ""  # the command line that runs this grid, for the page

  def cells(self, control: str) -> list[cells_lib.Cell]:
    trained = [h for h in self.heads if h != "trimmed"]
    if "trimmed" in self.heads and "aggregation" not in trained:
      trained.append("aggregation")
    return [cells_lib.Cell(control, head, method, seed) for head in trained
            for method in self.methods for seed in self.seeds]

  def cam_cell(self) -> cells_lib.Cell:
    """The one aggregation run whose analysis makes Score-CAMs for the page: the last control's
    first method and seed."""
    return cells_lib.Cell(list(self.controls)[-1], "aggregation", self.methods[0], self.seeds[0])

  def analyzed(self, cell: cells_lib.Cell) -> bool:
    return cell.head == "aggregation" and "trimmed" in self.heads or cell == self.cam_cell()

  def cam_kind(self, cell: cells_lib.Cell) -> str:
    return "score" if cell == self.cam_cell() else "grad"

  def command(self, cell: cells_lib.Cell, analysis: bool = False) -> str:
    return cell.command(self.config_file, self.out, self.controls, self.settings,
                        cells_lib.analysis_settings(self.cam_kind(cell)) if analysis else None)

  def config(self, cell: cells_lib.Cell):
    return cells_lib.cell_config(self.module, cell, self.controls, self.settings)

  # ----------------------------------------------------------------------------------- audit

  def audit(self, control: str) -> dict:
    """The shortcut cues' AP on every test set when training on each method (shortcuts.py)."""
    from agg_jax.analysis import shortcuts  # pylint: disable=import-outside-toplevel
    from agg_jax.data import tfds_source  # pylint: disable=import-outside-toplevel
    path = os.path.join(self.out, control, "shortcuts.json")
    if os.path.exists(path):
      return json.loads(fileio.path(path).read_text())
    start = time.perf_counter()
    sizes, cues, tests, fake_fraction = {}, {}, {}, {}
    for method in self.methods:
      data = self.config(cells_lib.Cell(control, "logits", method, self.seeds[0])).data
      dataset = tfds_source.load(data)
      train = shortcuts.face_cues(dataset.train, self.manual_dir)
      sizes[f"train {method}"] = len(dataset.train)
      for name, split in dataset.test.items():
        if name not in tests:
          tests[name] = (split.labels, shortcuts.face_cues(split, self.manual_dir))
          sizes[f"test {name}"] = len(split)
          fake_fraction[name] = float(np.mean(split.labels))
      for cue, values in train.items():
        cues.setdefault(cue, {})[method] = shortcuts.cue_average_precision(
            (dataset.train.labels, values),
            {name: (labels, test_cues[cue]) for name, (labels, test_cues) in tests.items()})
    entry = {"description": describe(self.controls[control]), "sizes": sizes, "cues": cues,
             "fake_fraction": fake_fraction, "seconds": round(time.perf_counter() - start, 1)}
    fileio.atomic_write_text(path, json.dumps(entry, indent=2))
    return entry

  # ----------------------------------------------------------------------------------- cells

  def run_cells(self, control: str) -> dict:
    done = {}
    for cell in self.cells(control):
      workdir = cell.workdir(self.out)
      if not cells_lib.is_done(workdir):
        print(f"agg_jax.grid: {self.command(cell)}", flush=True)
        cells_lib.run_cell(self.config(cell), workdir, unseen_real=self.unseen_real,
                           analyze=self.analyzed(cell), cam=self.cam_kind(cell))
      entry = cells_lib.read_cell(workdir)
      done[(cell.head, cell.method, cell.seed)] = entry
      if "trimmed" in entry:
        done[("trimmed", cell.method, cell.seed)] = entry
    return done

  def scores(self, control: str, head: str) -> compare.Scores:
    out = {}
    for method in self.methods:
      for seed in self.seeds:
        workdir = cells_lib.Cell(control, head, method, seed).workdir(self.out)
        for path in run.results_dir(workdir).glob("scores/*.npz"):
          saved = run.load_scores(path)
          out[(seed, method, path.stem)] = (saved["labels"], saved["scores"])
    return out

  # ----------------------------------------------------------------------------------- page

  def run_all(self, page: str) -> str:
    started = time.perf_counter()
    audits = {control: self.audit(control) for control in self.controls}
    results = {control: self.run_cells(control) for control in self.controls}
    tests = list(next(iter(audits.values()))["fake_fraction"])
    lines = self.header(tests)
    lines += report.shortcut_section(audits, tests)
    verdicts = {}
    for control, cells in results.items():
      lines += [f"## Results with control `{control}`", "",
                describe(self.controls[control]), ""]
      lines += report.results_section(cells, self.heads, self.methods, tests, self.seeds)
      if {"aggregation", "logits"} <= set(self.heads) and len(self.seeds) > 1:
        first, second = self.scores(control, "aggregation"), self.scores(control, "logits")
        differences = [compare.paired_bootstrap(first, second, self.seeds, self.methods, tests,
                                                summary, self.replicates)
                       for summary in compare.SUMMARIES]
        lines += report.comparison_section(differences, "aggregation", "logits")
        verdicts[control] = report.verdict(differences[0])
    if self.unseen_real:
      lines += report.unseen_real_section(results, self.heads)
    lines += self.figures(page)
    lines += self.footer(results, time.perf_counter() - started)
    if verdicts:
      lines[2:2] = ["**Verdict.** " + " ".join(
          f"With control `{control}`, {text}." for control, text in verdicts.items()), ""]
    fileio.path(page).parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_text(page, "\n".join(lines) + "\n")
    return page

  def header(self, tests) -> list[str]:
    settings = ", ".join(f"`{k}={v}`" for k, v in self.settings.items())
    return [f"# The paper's protocol on {self.config_file}", "",
            f"Train on real vs one method ({', '.join(self.methods)}), test on every method "
            f"({', '.join(tests)}); models: {', '.join(self.heads)}; seeds "
            f"{', '.join(map(str, self.seeds))}; every cell with {settings}. Written by "
            "`python -m agg_jax.grid` (commands at the end).", "",
            "The config's own description:", "",
            *[f"> {line}" if line else ">" for line in setup(self.module)], ""]

  def figures(self, page: str) -> list[str]:
    cell = self.cam_cell()
    analysis = fileio.path(cell.workdir(self.out)) / "analysis"
    assets = os.path.splitext(page)[0]
    os.makedirs(assets, exist_ok=True)
    lines = ["## Layer importance and CAMs of one aggregation run", "",
             f"The run `{cell.workdir(self.out)}` (control `{cell.control}`, trained on "
             f"{cell.method}, seed {cell.seed}): w_i . p_i per block (Figure 4) and Score-CAM "
             "on its two most important blocks (Figures 5-6).", ""]
    for name in ("importance.png", "cam_score.png"):
      if (analysis / name).exists():
        shutil.copyfile(analysis / name, os.path.join(assets, name))
        relative = os.path.join(os.path.basename(assets), name)
        lines += [f"![{name}]({relative})", ""]
    return lines

  def footer(self, results, wall: float) -> list[str]:
    seconds = {control: sum(sum(c["seconds"].values()) for (h, _, _), c in cells.items()
                            if h != "trimmed") for control, cells in results.items()}
    span = self.span_minutes()
    lines = ["## Time and commands", "",
             f"**Wall time of the grid: {span:.1f} min**, from the start of the first shortcut "
             "audit to the end of the last cell (the files' times: a grid stopped and resumed "
             "counts its pause too). The cells' own time: " + ", ".join(
                 f"{c} {s / 60:.1f} min" for c, s in seconds.items())
             + f". This invocation took {wall / 60:.1f} min (cells done before are read, not "
             "rerun).", "",
             "```bash", "make weights",
             "python -m agg_jax.datasets build face_folder "
             f"--manual_dir={self.manual_dir or 'FOLDER'}",
             "# the whole grid and this page:",
             self.grid_command or f"python -m agg_jax.grid --config={self.config_file} "
             f"--out={self.out}", "",
             "# each cell alone, then its analysis (the unseen real photos are scored by "
             "agg_jax.grid.cells.score_unseen_real):"]
    for control in self.controls:
      for cell in self.cells(control):
        lines.append(self.command(cell))
        if self.analyzed(cell):
          lines.append(self.command(cell, analysis=True))
    return lines + ["```", ""]

  def span_minutes(self) -> float:
    """Minutes from the first audit's start to the last cell's end, from the files' times."""
    starts, ends = [], []
    for control in self.controls:
      audit = fileio.path(self.out) / control / "shortcuts.json"
      starts.append(audit.stat().mtime - json.loads(audit.read_text())["seconds"])
      ends += [(run.results_dir(cell.workdir(self.out)) / cells_lib.CELL_JSON).stat().mtime
               for cell in self.cells(control)]
    return (max(ends) - min(starts)) / 60


def setup(module) -> list[str]:
  """The first two paragraphs of the config file's docstring."""
  paragraphs = (module.__doc__ or "").strip().split("\n\n")[:2]
  return "\n\n".join(paragraphs).splitlines()


def describe(overrides: dict) -> str:
  if not overrides:
    return "faces read as aligned (no control)."
  return "faces read with " + ", ".join(f"`{k}={v}`" for k, v in overrides.items()) + "."
