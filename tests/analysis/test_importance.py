"""Layer importance (paper section IV-D): contributions, class means, ranking, CSV and chart."""

import csv

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np

from agg_jax import models, sharding
from agg_jax.analysis import importance
from agg_jax.data import ArrayImages, Split


def _tiny_run(count=7, size=32):
  model = models.create("efficientnetv2_tiny", hidden=(8,), pool_window=4)
  images = np.asarray(jax.random.randint(jax.random.key(1), (count, size, size, 3), 0, 256),
                      np.uint8)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.asarray(images[:2]))
  labels = np.arange(count) % 2
  split = Split(ArrayImages(images), labels.astype(np.int32),
                np.array([f"img{i}" for i in range(count)]))
  return model, variables, split, images


def test_collect_gives_the_models_own_logits_and_primitives_in_order():
  model, variables, split, images = _tiny_run()
  mesh = sharding.make_mesh((("data", -1),))
  forward = importance.make_forward_fn(model, mesh)
  inputs = importance.collect(forward, variables, split, 4, mesh)  # 7 images: last batch padded
  logits, aux = jax.jit(model.apply)(variables, jnp.asarray(images))
  np.testing.assert_allclose(inputs.logits, logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(inputs.primitives, aux["primitives"], rtol=1e-5, atol=1e-5)
  assert list(inputs.ids) == list(split.ids)
  some = importance.collect(forward, variables, split, 4, mesh, rows=np.array([5, 2]))
  np.testing.assert_allclose(some.logits, logits[np.array([5, 2])], rtol=1e-5, atol=1e-5)
  assert list(some.ids) == ["img5", "img2"]


def test_contributions_are_the_blocks_shares_of_the_logit():
  # Eq. 3: the logit is the bias plus the sum over blocks of w_i . p_i.
  model, variables, split, images = _tiny_run()
  logits, aux = jax.jit(model.apply)(variables, jnp.asarray(images))
  aggregate = variables["params"]["head"]["aggregate"]
  contrib = importance.contributions(np.asarray(aux["primitives"]),
                                     np.asarray(aggregate["kernel"]))
  assert contrib.shape == (len(images), len(model.windows))
  np.testing.assert_allclose(contrib.sum(axis=1) + aggregate["bias"][0], logits, rtol=1e-5,
                             atol=1e-5)
  block = 2
  p = np.asarray(aux["primitives"])[:, block]
  w = np.asarray(aggregate["kernel"])[block * 10:(block + 1) * 10, 0]
  np.testing.assert_allclose(contrib[:, block], p @ w, rtol=1e-5, atol=1e-6)


def test_energy_and_separation_rank_differently():
  labels = np.array([0, 0, 1, 1])
  contrib = np.array([[5.0, -1.0, 0.1],   # block 0: large but the same for both classes
                      [5.0, -1.0, 0.0],
                      [5.0, 1.0, 0.2],    # block 1: flips sign with the class
                      [5.0, 1.0, 0.1]])
  assert importance.rank_blocks(contrib, labels, "energy") == [0, 1, 2]
  assert importance.rank_blocks(contrib, labels, "separation") == [1, 2, 0]
  means = importance.class_means(contrib, labels)
  np.testing.assert_allclose(means["real"], [5.0, -1.0, 0.05])
  np.testing.assert_allclose(means["fake"], [5.0, 1.0, 0.15])


def test_csv_and_chart(tmp_path):
  rng = np.random.default_rng(0)
  blocks = [f"block{i:02d}" for i in range(4)]
  kernel = rng.normal(size=(40, 1)).astype(np.float32)

  def inputs(n):
    return importance.HeadInputs(rng.normal(size=(n, 4, 10)).astype(np.float32),
                                 np.zeros(n, np.float32), np.arange(n) % 2,
                                 np.array([str(i) for i in range(n)]))

  per_set = {"gan": inputs(6), "sd21": inputs(4)}
  ranking = [2, 0, 3, 1]
  importance.write_csv(tmp_path / "importance.csv", blocks, per_set, kernel, ranking,
                       np.array([0.5, 0.1, 0.9, 0.3]))
  rows = list(csv.DictReader(open(tmp_path / "importance.csv")))
  assert len(rows) == 8
  row = next(r for r in rows if r["set"] == "sd21" and r["block"] == "block02")
  assert row["rank"] == "1"
  contrib = importance.contributions(per_set["sd21"].primitives, kernel)
  np.testing.assert_allclose(float(row["fake_mean"]), contrib[1::2, 2].mean(), rtol=1e-4)
  assert row["real_images"] == "2" and row["fake_images"] == "2"
  importance.chart(tmp_path / "importance.png", blocks, per_set, kernel)
  image = matplotlib.image.imread(tmp_path / "importance.png")
  assert image.shape[0] > image.shape[1] / 3  # two panels stacked
