"""The paper's analyses of a trained run (sections IV-D and V), `--mode=analyze`:

  importance.py  w_i . p_i per block (Figure 4) and the block ranking
  cam.py         Score-CAM and Grad-CAM on the important blocks (Figures 5 and 6)
  trimming.py    the top-N projections, the backbone cut after the deepest (eq. 5, Figures 7-8)
  report.py      one offline HTML page with the tables and figures
  analyze.py     runs them all for a run directory and writes RUN/analysis/
  settings.py    the `config.analysis` fields
  __main__.py    AP_deg pooled over the experiments of several analysed runs

This package imports no JAX at import time, so configs can read its settings.
"""
