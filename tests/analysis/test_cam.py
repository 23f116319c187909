"""Score-CAM and Grad-CAM against independent computations; the overlay and the figure."""

import functools
import math

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from agg_jax import models
from agg_jax.analysis import cam
from agg_jax.models.head import AggregationHead

SIZE = 64


def calibrated(model, images, seed=0):
  """Random init with batch statistics set from `images` (the model built with bn_momentum=0):
  every block output then has a unit scale, as in a trained network (a random init's block
  outputs shrink to ~1e-7 by the last blocks, and the head's ReLUs sit on their kinks)."""
  variables = jax.jit(model.init)(jax.random.key(seed), images[:1])
  _, stats = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, images)
  return {**variables, **stats}


def with_constant_channels(variables, channels):
  """Block 4 (no residual) with the given output channels constant: its last batch norm's scale
  0 and a nonzero bias there."""
  bn = variables["params"]["backbone"]["blocks_4"]["project_bn"]
  scale = np.array(bn["scale"])
  bias = np.array(bn["bias"])
  scale[channels] = 0.0
  bias[channels] = np.linspace(-1.0, 1.0, len(bias))[channels]
  new_bn = {"scale": jnp.asarray(scale), "bias": jnp.asarray(bias)}
  backbone = dict(variables["params"]["backbone"])
  backbone["blocks_4"] = {**backbone["blocks_4"], "project_bn": new_bn}
  return {**variables, "params": {**variables["params"], "backbone": backbone}}


@pytest.fixture(scope="module")
def setup():
  """The classifier on blocks 3 and 4 (the backbone cut after block 4), two images."""
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, (2, SIZE, SIZE, 3)).astype(np.uint8)
  model = models.create("efficientnetv2_tiny", blocks=(3, 4), hidden=(8,), bn_momentum=0.0,
                        drop_path_rate=0.0)
  variables = calibrated(model, rng.randint(0, 256, (8, SIZE, SIZE, 3)).astype(np.uint8))
  return model, variables, images


class Static:
  """A model as a static jit argument (Flax modules with a dict field are unhashable)."""

  def __init__(self, module):
    self.module, self.key = module, repr(module)

  def __hash__(self):
    return hash(self.key)

  def __eq__(self, other):
    return self.key == other.key


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, variables, images):
  return model.module.apply(variables, images, train=False)[0]


@functools.partial(jax.jit, static_argnums=0)
def _sown(model, variables, images):
  _, state = model.module.apply(variables, images, train=False, mutable=["intermediates"])
  return {name: value[0] for name, value in state["intermediates"]["backbone"].items()}


def sown_blocks(model, variables, images):
  """Every block output, from the model's `intermediates` (not through cam.py)."""
  return {name: np.array(value) for name, value in _sown(Static(model), variables, images).items()}


def torch_upsample(maps, height, width):
  """(N, h, w) -> (N, H, W) with torch's bilinear interpolation, align_corners=False."""
  import torch  # pylint: disable=import-outside-toplevel
  out = torch.nn.functional.interpolate(torch.from_numpy(np.asarray(maps))[:, None],
                                        size=(height, width), mode="bilinear",
                                        align_corners=False)
  return out[:, 0]


def reference_score_cam(model, variables, images, layer, target, weighting, maps="activation"):
  """haofanwang/Score-CAM cam/scorecam.py, one image and one channel at a time; a constant
  channel is judged on the activation itself (as cam.score_cam documents); maps="mask" sums the
  normalised masks instead of the upsampled activations."""
  import torch  # pylint: disable=import-outside-toplevel

  def f(image):  # the explained class's probability for one (H, W, 3) image
    logit = _forward(Static(model), variables, np.asarray(image, np.float32)[None])
    p_fake = float(jax.nn.sigmoid(logit)[0])
    return p_fake if target == 1 else 1.0 - p_fake

  acts = torch.from_numpy(sown_blocks(model, variables, images)[layer]).permute(0, 3, 1, 2)
  batch, channels, height, width = len(images), acts.shape[1], SIZE, SIZE
  baseline = f(np.zeros((height, width, 3)))
  results = []
  for b in range(batch):
    x = torch.from_numpy(images[b].astype(np.float32))
    scores, saliency = [], []
    for k in range(channels):
      activation = acts[b, k]
      if activation.max() == activation.min():
        continue
      up = torch_upsample(activation[None].numpy(), height, width)[0]
      norm = (up - up.min()) / (up.max() - up.min())
      scores.append(f((x * norm[:, :, None]).numpy()))
      saliency.append(norm if maps == "mask" else up)
    if weighting == "softmax":
      weights = torch.softmax(torch.tensor(scores, dtype=torch.float64) - baseline, 0).tolist()
    else:
      weights = scores
    total = torch.zeros(height, width)
    for weight, up in zip(weights, saliency):
      total += weight * up
    total = torch.relu(total)
    low, high = total.min(), total.max()
    results.append(torch.zeros_like(total) if low == high else (total - low) / (high - low))
  return torch.stack(results).numpy()


def check_maps(maps, batch):
  assert maps.shape == (batch, SIZE, SIZE) and maps.dtype == np.float32
  assert maps.min() >= 0 and maps.max() <= 1
  np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0)  # normalised per image


@pytest.mark.parametrize("weighting,target,maps", [
    ("softmax", 1, "activation"), ("confidence", 1, "activation"), ("softmax", 0, "activation"),
    ("softmax", 1, "mask")])
def test_score_cam_matches_reference_loop(setup, weighting, target, maps):
  model, variables, images = setup
  variables = with_constant_channels(variables, [0, 7, 39])  # skipped: weight 0
  layer, chunk = "block04", 12  # 40 channels: 2 * 40 masked images, 7 chunks, the last padded
  calls = []
  heat = cam.score_cam(model, variables, images, layer, chunk=chunk, target=target,
                       weighting=weighting, maps=maps,
                       progress=lambda *call: calls.append(call))
  check_maps(heat, len(images))
  total = len(images) * 40
  assert calls == [(min(done, total), total) for done in range(chunk, total + chunk, chunk)]
  assert len(calls) == math.ceil(total / chunk)
  expected = reference_score_cam(model, variables, images, layer, target, weighting, maps)
  assert np.abs(heat - expected).max() < 1e-5


def test_score_cam_depends_on_target_and_weighting(setup):
  model, variables, images = setup
  fake = cam.score_cam(model, variables, images, "block04", chunk=12)
  real = cam.score_cam(model, variables, images, "block04", chunk=12, target=0)
  confidence = cam.score_cam(model, variables, images, "block04", chunk=12,
                             weighting="confidence")
  assert np.abs(fake - real).max() > 1e-2
  assert np.abs(fake - confidence).max() > 1e-2
  with pytest.raises(KeyError, match="block05"):  # the backbone stops after block 4
    cam.block_activations(model, variables, images, "block05")
  with pytest.raises(ValueError, match="target"):
    cam.score_cam(model, variables, images, "block04", target=2)


def test_constant_channels_give_zero_maps(setup):
  """Every channel of block 4 constant: Score-CAM skips them all, Grad-CAM's map is flat."""
  model, variables, images = setup
  variables = with_constant_channels(variables, np.arange(40))
  acts = cam.block_activations(model, variables, images, "block04")
  assert not np.ptp(np.asarray(acts), axis=(1, 2)).any()
  for weighting in cam.WEIGHTINGS:
    maps = cam.score_cam(model, variables, images, "block04", chunk=12, weighting=weighting)
    assert maps.shape == (2, SIZE, SIZE) and maps.dtype == np.float32 and not maps.any()
  assert not cam.grad_cam(model, variables, images, "block04").any()


def head_gradient(model, variables, images, layer, sign):
  """d (sign * logit) / d block output of the last block, from the head alone."""
  endpoints = sown_blocks(model, variables, images)
  head = AggregationHead(model.windows, model.hidden, model.num_primitives)

  def score(block):
    logits, _ = head.apply({"params": variables["params"]["head"]}, {**endpoints, layer: block})
    return sign * logits.sum()
  return endpoints[layer], np.asarray(jax.grad(score)(jnp.asarray(endpoints[layer])))


@pytest.mark.parametrize("target", [1, 0])
def test_grad_cam_matches_head_gradient(setup, target):
  model, variables, images = setup
  layer = "block04"  # the last block: no block reads it, the head alone gives d/dA
  acts, grads = cam.block_gradients(model, variables, images, layer, target=target)
  expected_acts, expected_grads = head_gradient(model, variables, images, layer,
                                                1.0 if target == 1 else -1.0)
  np.testing.assert_allclose(acts, expected_acts, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(grads, expected_grads, rtol=1e-4, atol=1e-5)
  assert np.abs(expected_grads).max() > 1e-3
  maps = cam.grad_cam(model, variables, images, layer, target=target)
  check_maps(maps, len(images))
  weights = expected_grads.mean(axis=(1, 2))
  low_res = np.maximum(np.einsum("bhwc,bc->bhw", expected_acts, weights), 0)
  up = torch_upsample(low_res.astype(np.float32), SIZE, SIZE).numpy()
  low, high = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(maps, (up - low) / (high - low), atol=1e-5)


def test_block_gradients_match_finite_differences(setup):
  model, variables, images = setup
  layer = "block03"  # read by the later blocks as well as by the head
  _, grads = cam.block_gradients(model, variables, images, layer)
  perturbed = model.clone(backbone=model.backbone.clone(perturb_endpoints=True))
  shapes = jax.eval_shape(perturbed.init, jax.random.key(0), images)["perturbations"]
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
  direction = np.random.RandomState(1).randn(*grads.shape).astype(np.float32)
  logits = jax.jit(lambda p: perturbed.apply({**variables, "perturbations": p}, images)[0])

  def total(step):
    perturbations = {"backbone": {**zeros["backbone"], layer: step * direction}}
    return float(np.asarray(logits(perturbations), np.float64).sum())
  eps = 1e-2
  numeric = (total(eps) - total(-eps)) / (2 * eps)
  analytic = float((np.asarray(grads, np.float64) * direction).sum())
  assert abs(numeric) > 1e-2, numeric
  assert abs(numeric - analytic) < 1e-2 * abs(numeric), (numeric, analytic)
  _, real = cam.block_gradients(model, variables, images, layer, target=0)
  np.testing.assert_allclose(real, -np.asarray(grads))
  assert np.abs(cam.grad_cam(model, variables, images, layer)
                - cam.grad_cam(model, variables, images, layer, target=0)).max() > 1e-2


def test_overlay():
  image = np.full((4, 6, 3), 200, np.uint8)
  heat = np.zeros((4, 6))
  heat[:, 3:] = 1.0
  out = cam.overlay(image, heat, alpha=0.5)
  assert out.shape == (4, 6, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[0, 0], [100, 100, 164])  # jet(0) = (0, 0, 0.5)
  np.testing.assert_array_equal(out[0, 5], [164, 100, 100])  # jet(1) = (0.5, 0, 0)
  np.testing.assert_array_equal(cam.overlay(image, heat, alpha=0.0), image)
  with pytest.raises(ValueError):
    cam.overlay(image, heat[:, :5])


def test_cam_figure(tmp_path):
  rng = np.random.RandomState(3)
  images = rng.randint(0, 256, (2, 40, 40, 3)).astype(np.uint8)
  heatmaps = {"block03": rng.rand(2, 40, 40), "block05": rng.rand(2, 40, 40)}
  path = tmp_path / "figs" / "cam.png"
  cam.cam_figure(images, heatmaps, ["real, p(fake)=0.12", "fake, p(fake)=0.91"], path)
  picture = matplotlib.image.imread(path)
  height, width = picture.shape[:2]
  assert height > 100 and width > 100
  assert 1.2 < width / height < 1.9  # 3 panels across, 2 down, the row titles on the left
  with pytest.raises(ValueError):
    cam.cam_figure(images, heatmaps, ["one title"], tmp_path / "bad.png")


def test_grad_cam_maps_of_several_layers_in_one_pass_equal_grad_cam(setup):
  model, variables, images = setup
  maps = jax.jit(lambda v, x: cam.grad_cam_maps(model, v, x, ["block04", "block03"]))(
      variables, images)
  assert maps.shape == (len(images), 2, SIZE, SIZE)
  np.testing.assert_allclose(maps[:, 0], cam.grad_cam(model, variables, images, "block04"),
                             atol=1e-6)
  np.testing.assert_allclose(maps[:, 1], cam.grad_cam(model, variables, images, "block03"),
                             atol=1e-6)
