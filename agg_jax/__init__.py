"""agg_jax: "Aggregating Layers for Deepfake Detection" (Jevnisek & Avidan, ICPR 2022) in JAX."""

from agg_jax import cpu_defaults as _cpu_defaults

_cpu_defaults.apply()  # before JAX creates its CPU backend (see the module)
