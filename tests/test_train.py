"""The jitted train step: learning on a fixed batch, and starting from converted weights (8
devices against one, data parallel and FSDP: tests/test_sharding.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agg_jax import checkpoint, models, sharding, train
from configs import demo as demo_config


def tiny_config(**train_overrides):
  config = demo_config.get_config()
  config.model.name = "efficientnetv2_tiny"
  config.model.hidden = (16,)
  config.train.learning_rate = 3e-3
  config.train.warmup_steps = 0
  config.train.num_steps = 50
  config.train.update(train_overrides)
  return config


def fixed_batch(n=8, size=32):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)
  images[1::2, ::2, ::2] = 255  # fakes carry a visible grid
  return {"images": images, "labels": np.array([0, 1] * (n // 2), np.float32)}


def test_training_steps_lower_the_loss_on_a_fixed_batch():
  config = tiny_config()
  mesh = sharding.make_mesh(config.mesh)
  model = models.from_config(config.model)
  state, shardings = train.init_state(model, train.create_optimizer(config), config, mesh,
                                      (32, 32, 3))
  step = train.make_train_step(mesh, shardings)
  batch = sharding.global_batch(fixed_batch(), mesh)
  losses = []
  for _ in range(12):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.5 * losses[0], losses
  assert int(state.step) == 12


def test_the_ahead_of_time_step_computes_what_the_jitted_one_does(monkeypatch):
  """The training loop runs `compiled_train_step` (compiled, then the compiler's memory handed
  back before the first step) instead of the jitted step: same state, same metrics."""
  config = tiny_config()
  mesh = sharding.make_mesh(config.mesh)
  model = models.from_config(config.model)
  tx = train.create_optimizer(config)
  batch = sharding.global_batch(fixed_batch(), mesh)
  released = []
  monkeypatch.setattr(train.cpu_defaults, "release_free_memory", lambda: released.append(1))
  initial, shardings = train.init_state(model, tx, config, mesh, (32, 32, 3))
  results = []
  for make in ("jitted", "compiled"):
    state = jax.tree.map(jnp.copy, initial)  # each step donates the state it is given
    released.clear()
    step = (train.make_train_step(mesh, shardings) if make == "jitted" else
            train.compiled_train_step(mesh, shardings, state, batch))
    assert len(released) == (make == "compiled")
    for _ in range(2):  # the second call takes the state the first one returned
      state, metrics = step(state, batch)
    results.append((state, metrics))
  (jitted_state, jitted_metrics), (state, metrics) = results
  assert int(state.step) == 2
  for got, want in zip(jax.tree.leaves((state, metrics)),
                       jax.tree.leaves((jitted_state, jitted_metrics))):
    np.testing.assert_array_equal(got, want)


def test_checkpoints_keep_adams_moments_per_parameter_so_runs_resume_under_any_rules(tmp_path):
  """Replicated, the optimizer runs on the parameters concatenated (concatenated_update), with
  its moments in one vector per group; the checkpoint holds them per parameter, as the sharded
  (FSDP) optimizer keeps them, so either resumes the other's checkpoint."""
  config = tiny_config()
  mesh = sharding.make_mesh(config.mesh)
  state, _ = train.init_state(models.from_config(config.model), train.create_optimizer(config),
                              config, mesh, (32, 32, 3))
  config.sharding_rules = ("fsdp",)
  fsdp_tx = train.create_optimizer(config)  # parameter by parameter
  grads = jax.tree.map(lambda p: np.full(p.shape, 0.1, p.dtype), state.params)
  step = jax.jit(lambda s: s.apply_gradients(grads=grads))  # the moments no longer zero
  replicated = step(state)
  fsdp = step(state.replace(tx=fsdp_tx, opt_state=fsdp_tx.init(state.params)))
  assert replicated.opt_state[1][0].mu.keys() == {"masked_float32", "unmasked_float32"}

  ckpts = checkpoint.RunCheckpoints(str(tmp_path))
  ckpts.save_latest(1, train._checkpointed(replicated))  # pylint: disable=protected-access
  ckpts.wait()
  restore = lambda like: train._from_checkpoint(  # pylint: disable=protected-access
      ckpts.restore_latest(checkpoint.abstract(train._checkpointed(like))))
  expected = replicated.tx.per_parameter_state(replicated.opt_state, replicated.params)
  assert jax.tree.structure(expected) == jax.tree.structure(fsdp.opt_state)
  for got, want in ((restore(fsdp).opt_state, expected),
                    (restore(replicated), replicated)):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(np.testing.assert_array_equal, got, want)


def test_bce_loss_is_eq_4():
  logits = jax.numpy.array([2.0, -1.0, 0.5])
  labels = jax.numpy.array([1.0, 0.0, 0.0])
  s = jax.nn.sigmoid(logits)
  expected = -(labels * np.log(s) + (1 - labels) * np.log(1 - s)).mean()
  np.testing.assert_allclose(train.bce_loss(logits, labels), expected, rtol=1e-6)


def test_init_from_starts_the_backbone_from_converted_weights(tmp_path):
  from agg_jax import weights  # pylint: disable=import-outside-toplevel
  backbone = models.create("efficientnetv2_tiny", head=None)
  pretrained = backbone.init(jax.random.key(42), np.zeros((1, 32, 32, 3), np.uint8))
  weights.save(str(tmp_path / "w"), "efficientnetv2_tiny", pretrained)

  config = tiny_config()
  config.model.init_from = str(tmp_path / "w")
  mesh = sharding.make_mesh(config.mesh)
  state, _ = train.init_state(models.from_config(config.model), train.create_optimizer(config),
                              config, mesh, (32, 32, 3), train.load_pretrained(config))
  np.testing.assert_array_equal(state.params["backbone"]["stem_conv"]["kernel"],
                                pretrained["params"]["stem_conv"]["kernel"])
  np.testing.assert_array_equal(state.batch_stats["backbone"]["blocks_3"]["project_bn"]["var"],
                                pretrained["batch_stats"]["blocks_3"]["project_bn"]["var"])
  assert "projection_block00" in state.params["head"]  # the head stays freshly initialised

  config.model.name = "efficientnetv2_mini"
  with pytest.raises(weights.WeightsError, match="holds weights of 'efficientnetv2_tiny'"):
    train.load_pretrained(config)
