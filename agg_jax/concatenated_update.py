"""An optax transformation run on the parameters concatenated into a few vectors, as
`optax.flatten` runs one, with its state kept per parameter in checkpoints.

Optax updates every parameter on its own: AdamW with gradient clipping is some 25 operations per
parameter, and the detector has about 900 parameters (EfficientNetV2-S), so its optimizer was
most of the train step's operations, each traced, lowered, compiled and loaded on its own. On the
parameters concatenated (one vector per group: weight decay or not, dtype) the same arithmetic is
a few dozen operations, and the step's first call from the compilation cache takes 12-14 s
instead of 17-20 (docs/architecture.md, "Speed and memory on CPU"). The results are the
transformation's own up to the order of additions in sums over all parameters (gradient
clipping's global norm).

Checkpoints keep the state per parameter, as the transformation itself would
(`per_parameter_state`, and `grouped_state` back), so a run resumes whichever way it was
updated before. A concatenation gathers its parts: this is for parameters that are not sharded
(`train.create_optimizer` decides).
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agg_jax import sharding

MASKED, UNMASKED = "masked", "unmasked"


class Concatenated(NamedTuple):
  """An optax transformation (`init`, `update`) made by `concatenated`; `masked` says which group
  a parameter is in."""
  init: Callable
  update: Callable
  masked: Callable[[Any], bool]

  def per_parameter_state(self, state, params):
    """`state` with each group's vector replaced by the tree of the parameters it holds: the
    state the transformation keeps when it runs parameter by parameter. Concrete arrays, outside
    a jitted function."""
    layout = _Layout(params, self.masked)
    return _map_subtrees(layout.group_treedef, lambda groups: _on_host(layout.ungroup, groups),
                         state)

  def grouped_state(self, state, params):
    """The inverse of `per_parameter_state`."""
    layout = _Layout(params, self.masked)
    return _map_subtrees(layout.treedef,
                         lambda tree: _on_host(functools.partial(layout.group, xp=np), tree), state)


def concatenated(make_tx: Callable[[Callable], optax.GradientTransformation],
                 masked: Callable[[Any], bool]) -> Concatenated:
  """make_tx(mask) run on one vector per group of parameters.

  Args:
    make_tx: builds the transformation from a mask function as optax's `mask` arguments take it
      (a tree of parameters to a tree of bools; weight decay's, for example).
    masked: a parameter's mask value. Parameters are grouped by it and by their dtype; the state
      holds a dict of vectors ("masked_float32", "unmasked_float32") where make_tx's holds a
      tree of parameters.
  """
  on_groups = make_tx(lambda groups: {key: key.partition("_")[0] == MASKED for key in groups})

  def init(params):
    return on_groups.init(_Layout(params, masked).group(params))

  def update(updates, state, params=None):
    layout = _Layout(updates, masked)
    grouped_params = None if params is None else layout.group(params)
    grouped_updates, state = on_groups.update(layout.group(updates), state, grouped_params)
    return layout.ungroup(grouped_updates), state

  return Concatenated(init, update, masked)


class _Layout:
  """Where each parameter of a tree goes in its group's vector, and back: with jax.numpy in a
  jitted function, or with numpy for concrete arrays outside one (`_on_host`: splitting eagerly
  with jax.numpy would compile a program per slice)."""

  def __init__(self, tree, masked):
    leaves, self.treedef = jax.tree.flatten(tree)
    self.shapes = [leaf.shape for leaf in leaves]
    keys = [f"{MASKED if masked(leaf) else UNMASKED}_{jnp.dtype(leaf.dtype).name}"
            for leaf in leaves]
    self.members = {key: [i for i, k in enumerate(keys) if k == key] for key in sorted(set(keys))}
    self.group_treedef = jax.tree.structure({key: 0 for key in self.members})

  def group(self, tree, xp=jnp) -> dict:
    leaves = self.treedef.flatten_up_to(tree)
    return {key: xp.concatenate([xp.ravel(leaves[i]) for i in members])
            for key, members in self.members.items()}

  def ungroup(self, groups: dict):
    leaves = [None] * len(self.shapes)
    for key, members in self.members.items():
      offset = 0
      for i in members:
        size = int(np.prod(self.shapes[i]))
        leaves[i] = groups[key][offset:offset + size].reshape(self.shapes[i])
        offset += size
    return self.treedef.unflatten(leaves)


def _on_host(fn, tree):
  """fn of the values of a tree of concrete, replicated arrays, computed with numpy from this
  process's copies; its results replicated over the devices of the tree's first leaf."""
  like = jax.tree.leaves(tree)[0].sharding
  if isinstance(like, jax.sharding.NamedSharding):
    like = sharding.replicated(like.mesh)
  values = jax.tree.map(lambda array: np.asarray(array.addressable_data(0)), tree)
  return jax.tree.map(
      lambda value: jax.make_array_from_callback(value.shape, like, lambda index: value[index]),
      fn(values))


def _map_subtrees(treedef, fn, state):
  """`state` with fn applied to each subtree shaped as `treedef`; its other leaves (step counts)
  as they are."""
  shaped = lambda node: jax.tree.structure(node) == treedef
  return jax.tree.map(lambda node: fn(node) if shaped(node) else node, state, is_leaf=shaped)
