"""The jitted, sharded train step: learning on a fixed batch, and 1 device == 8 devices."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from agg_jax import models, sharding, train
from configs import demo as demo_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def test_bce_loss_is_eq_4():
  logits = jax.numpy.array([2.0, -1.0, 0.5])
  labels = jax.numpy.array([1.0, 0.0, 0.0])
  s = jax.nn.sigmoid(logits)
  expected = -(labels * np.log(s) + (1 - labels) * np.log(1 - s)).mean()
  np.testing.assert_allclose(train.bce_loss(logits, labels), expected, rtol=1e-6)


SHARDED_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from agg_jax import models, sharding, train
    from tests.test_train import tiny_config, fixed_batch

    assert jax.device_count() == 8, jax.devices()
    config = tiny_config()
    config.sharding_rules = ((r"head/.*kernel", "fsdp"), (".*", "replicate"))
    model = models.from_config(config.model)
    results = {}
    for devices in (1, 8):
      mesh = sharding.make_mesh(config.mesh, jax.devices()[:devices])
      state, shardings = train.init_state(model, train.create_optimizer(config), config, mesh,
                                          (32, 32, 3))
      step = train.make_train_step(mesh, shardings)
      batch = sharding.global_batch(fixed_batch(16), mesh)
      assert len(batch["images"].sharding.device_set) == devices
      losses = []
      for _ in range(2):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
      kernel = state.params["head"]["projection_block00"]["dense0"]["kernel"]
      results[devices] = (losses, np.asarray(kernel))
      if devices == 8:  # the fsdp rule splits the head's kernels over the data axis
        assert kernel.sharding.spec[0] == "data", kernel.sharding
    np.testing.assert_allclose(results[1][0], results[8][0], rtol=1e-4)
    np.testing.assert_allclose(results[1][1], results[8][1], rtol=1e-3, atol=1e-5)
    print("ok", results[1][0], results[8][0])
""")


def test_eight_device_mesh_trains_like_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.startswith("ok")


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
