"""The optimizer run on concatenated parameters against optax run parameter by parameter: the
same updates and state, far fewer operations, and a state that converts both ways."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from agg_jax import concatenated_update, sharding, train
from tests.test_train import tiny_config


def _params(rng, leaves=6):
  """Kernels (decayed) and vectors (not) of several shapes."""
  shapes = [(3, 4), (4,), (2, 2, 3, 5), (5,), (7, 3), (1, 1, 3, 8)] * (leaves // 6)
  return {f"layer{i}": jnp.asarray(rng.normal(size=shape), jnp.float32)
          for i, shape in enumerate(shapes)}


def _optimizers(**train_overrides):
  """create_optimizer's transformation, concatenated (replicated parameters) and parameter by
  parameter (sharded)."""
  config = tiny_config(grad_clip_norm=0.5, weight_decay=0.1, warmup_steps=2, **train_overrides)
  concatenated = train.create_optimizer(config)
  config.sharding_rules = ("fsdp",)
  return concatenated, train.create_optimizer(config)


def test_create_optimizer_concatenates_replicated_parameters_only():
  concatenated, per_parameter = _optimizers()
  assert isinstance(concatenated, concatenated_update.Concatenated)
  assert not isinstance(per_parameter, concatenated_update.Concatenated)
  assert not sharding.shards_parameters(((".*", "replicate"),))
  assert sharding.shards_parameters(("fsdp",))
  assert sharding.shards_parameters((("head/", "fsdp", 1024), (".*", "replicate")))


def test_updates_and_state_equal_optax_parameter_by_parameter():
  rng = np.random.default_rng(0)
  concatenated, per_parameter = _optimizers()
  params = _params(rng)
  ours, theirs = params, params
  our_state, their_state = concatenated.init(params), per_parameter.init(params)
  for _ in range(4):  # through the warm-up, gradients large enough to be clipped
    grads = jax.tree.map(lambda p: jnp.asarray(3 * rng.normal(size=p.shape), jnp.float32), params)
    updates, our_state = jax.jit(concatenated.update)(grads, our_state, ours)
    ours = optax.apply_updates(ours, updates)
    updates, their_state = jax.jit(per_parameter.update)(grads, their_state, theirs)
    theirs = optax.apply_updates(theirs, updates)
  # Only the global norm's additions come in another order.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours, theirs)
  assert not jax.tree.all(jax.tree.map(lambda a, b: np.allclose(a, b), ours, params))

  # The state holds one vector per group; per parameter it is exactly optax's.
  mu = our_state[1][0].mu
  assert sorted(mu) == ["masked_float32", "unmasked_float32"]
  assert mu["masked_float32"].shape == (12 + 60 + 21 + 24,) and mu["unmasked_float32"].shape == (9,)
  converted = concatenated.per_parameter_state(our_state, ours)
  assert jax.tree.structure(converted) == jax.tree.structure(their_state)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               converted, their_state)
  back = concatenated.grouped_state(converted, ours)
  assert jax.tree.structure(back) == jax.tree.structure(our_state)
  jax.tree.map(np.testing.assert_array_equal, back, our_state)


def test_parameters_are_grouped_by_dtype_too():
  concatenated, _ = _optimizers()
  params = {"kernel": jnp.ones((2, 3), jnp.bfloat16), "other": jnp.ones((4, 2)),
            "bias": jnp.zeros(3)}
  assert sorted(concatenated.init(params)[1][0].nu) == [
      "masked_bfloat16", "masked_float32", "unmasked_float32"]


def test_the_update_is_a_few_operations_not_a_few_per_parameter():
  rng = np.random.default_rng(0)
  params = _params(rng, leaves=60)
  counts = {}
  for name, tx in zip(("concatenated", "per parameter"), _optimizers()):
    state = tx.init(params)
    counts[name] = len(jax.make_jaxpr(tx.update)(params, state, params).eqns)
  # Per parameter the equations grow with the 60 parameters; concatenated, only the slices back.
  assert counts["concatenated"] * 3 < counts["per parameter"], counts


def test_the_state_converts_on_the_mesh_it_is_placed_on():
  rng = np.random.default_rng(1)
  concatenated, _ = _optimizers()
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  replicated = NamedSharding(mesh, PartitionSpec())
  params = jax.device_put(_params(rng), replicated)
  state = jax.jit(concatenated.init, out_shardings=replicated)(params)
  converted = concatenated.per_parameter_state(state, params)
  for moment in (converted[1][0].mu, converted[1][0].nu):
    for value in jax.tree.leaves(moment):
      assert value.sharding.is_equivalent_to(replicated, value.ndim)
  back = concatenated.grouped_state(converted, params)
  jax.tree.map(np.testing.assert_array_equal, back, state)
  assert jax.tree.leaves(back)[1].sharding.is_equivalent_to(replicated, 1)
