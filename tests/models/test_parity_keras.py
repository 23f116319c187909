"""Parity with an implementation no one here wrote: Keras 3's `keras.applications` on JAX.

Each reference gets random weights (batch-norm statistics included), is saved as a real
`.weights.h5`, imported by agg_jax.weights and run on the same raw 0-255 images; our logits must
match to 1e-5 of the largest logit. Random batch-norm statistics that ignore the activations make
a deep network explode or collapse to a constant (a parity test on a constant proves nothing), so
the moving statistics are first calibrated on other images (one training-mode pass with momentum
0) and then jittered by 10%; the test checks that the logits still vary across inputs.
"""

import atexit
import functools
import os
import shutil
import sys
import tempfile

import jax
import numpy as np
import pytest
import skimage.data
import skimage.transform


def _import_keras_on_jax():
  """Keras 3 on the JAX backend, whatever KERAS_BACKEND the environment sets.

  Keras reads KERAS_BACKEND and KERAS_HOME once, when first imported: both are set for that
  import (KERAS_HOME to a temporary folder, so nothing is written to ~/.keras) and then restored
  for the rest of the session. A Keras imported earlier in this process on another backend
  cannot be switched: that fails here instead of skipping the parity tests.
  """
  if "keras" not in sys.modules:
    saved = {name: os.environ.get(name) for name in ("KERAS_BACKEND", "KERAS_HOME")}
    home = tempfile.mkdtemp(prefix="keras_home_")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ.update(KERAS_BACKEND="jax", KERAS_HOME=home)
    try:
      pytest.importorskip("keras", reason="parity tests need Keras 3 (the 'test' extra)")
    finally:
      for name, value in saved.items():
        if value is None:
          os.environ.pop(name, None)
        else:
          os.environ[name] = value
  keras = sys.modules["keras"]
  if keras.backend.backend() != "jax":
    pytest.fail(f"Keras was imported before these tests with the {keras.backend.backend()!r} "
                "backend; the parity tests need KERAS_BACKEND=jax from Keras' first import "
                "(run them in their own pytest process)", pytrace=False)
  return keras


keras = _import_keras_on_jax()

from agg_jax import models, weights  # noqa: E402

# (our model, Keras application, input sizes). Our models take raw pixels; Keras' EfficientNets
# normalise inside the model, Keras' Xception expects `xception.preprocess_input` outside.
CASES = [("efficientnetv2_s", "EfficientNetV2S", (224, 256)),
         ("efficientnetv2_b0", "EfficientNetV2B0", (224,)),
         ("efficientnet_b0", "EfficientNetB0", (224,)),
         ("xception", "Xception", (160,))]  # any size; 160 keeps the test short
PREPROCESS = {"xception": lambda x: keras.applications.xception.preprocess_input(x.copy())}


def _images(names, size):
  return np.stack([skimage.transform.resize(getattr(skimage.data, n)(), (size, size),
                                            preserve_range=True) for n in names]).astype(np.float32)


def _randomise(model, name, size, seed=0):
  """Random weights with calibrated, jittered batch-norm statistics (see module docstring)."""
  rng = np.random.default_rng(seed)
  for w in model.weights:
    leaf, shape = w.path.split("/")[-1], tuple(w.shape)
    if leaf == "gamma":
      w.assign(rng.uniform(0.8, 1.2, shape).astype(np.float32))
    elif leaf in ("beta", "bias"):
      w.assign(rng.normal(0.0, 0.1, shape).astype(np.float32))
    elif leaf == "mean":  # EfficientNet v1's input Normalization: ImageNet's, as officially
      w.assign(np.asarray([0.485, 0.456, 0.406], np.float32))
    elif leaf == "variance":
      w.assign(np.asarray([0.229, 0.224, 0.225], np.float32) ** 2)
  for layer in model.layers:
    if isinstance(layer, keras.layers.Normalization):
      layer.finalize_state()  # the layer reads its mean and variance from here on
  batch_norms = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
  for layer in batch_norms:
    layer.momentum = 0.0
  calibration = PREPROCESS.get(name, np.asarray)(
      _images(["astronaut", "rocket", "immunohistochemistry"], size))
  _, statistics = jax.jit(functools.partial(model.stateless_call, training=True))(
      [v.value for v in model.trainable_variables],
      [v.value for v in model.non_trainable_variables], calibration)
  for variable, value in zip(model.non_trainable_variables, statistics):
    moving = variable.path.endswith(("/moving_mean", "/moving_variance"))
    jitter = rng.uniform(0.9, 1.1, tuple(variable.shape)) if moving else 1.0
    variable.assign((np.asarray(value) * jitter).astype(np.float32))


@functools.cache
def _reference(name, application, size, directory):
  """The randomised Keras model (any input size) and its saved `.weights.h5`."""
  keras.utils.set_random_seed(0)
  model = getattr(keras.applications, application)(
      weights=None, include_top=True, classifier_activation=None, input_shape=(size, size, 3))
  _randomise(model, name, size)
  path = os.path.join(directory, f"{name}.weights.h5")
  model.save_weights(path)
  # The layers take any size; only the functional wrapper's shape check pins the build size.
  model.input_spec = keras.InputSpec(ndim=4, axes={-1: 3})
  return model, path


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("keras"))


@pytest.mark.parametrize("name, application, size, built_at",
                         [(n, a, s, sizes[0]) for n, a, sizes in CASES for s in sizes])
def test_logits_match_keras_reference(name, application, size, built_at, reference_dir):
  model, path = _reference(name, application, built_at, reference_dir)
  x = _images(["chelsea", "coffee"], size)
  expected = np.asarray(model.predict(PREPROCESS.get(name, np.asarray)(x), verbose=0))
  variables = weights.convert("keras", path, name)
  logits, _ = jax.jit(models.create_backbone(name).apply)(variables, x)
  scale = np.abs(expected).max()
  difference = np.abs(np.asarray(logits) - expected).max() / scale
  variation = expected.std(axis=0).mean() / scale
  print(f"\n{name} @ {size}: relative max logit difference {difference:.2e}, logit variation "
        f"across inputs {variation:.3f} (std / max |logit|), max |logit| {scale:.3g}")
  assert variation > 0.01, "randomised reference collapsed to a constant output"
  assert difference < 1e-5


def test_keras_archive_and_legacy_h5_import_like_weights_h5(reference_dir, tmp_path):
  model, path = _reference("efficientnet_b0", "EfficientNetB0", 224, reference_dir)
  expected = weights.flatten(weights.convert("keras", path, "efficientnet_b0"))
  model.save(tmp_path / "b0.keras")
  model.save(tmp_path / "b0.h5")  # the legacy format of the official ImageNet files
  for other in ("b0.keras", "b0.h5"):
    got = weights.flatten(weights.convert("keras", str(tmp_path / other), "efficientnet_b0"))
    assert got.keys() == expected.keys()
    for key in expected:
      np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{other}: {key}")


def test_efficientnet_v1_rejects_foreign_input_normalisation(reference_dir, tmp_path):
  model, _ = _reference("efficientnet_b0", "EfficientNetB0", 224, reference_dir)
  variance = next(w for w in model.weights if w.path.startswith("normalization")
                  and w.path.endswith("/variance"))
  saved = np.asarray(variance.numpy())
  variance.assign(np.ones(3, np.float32))
  try:
    model.save_weights(tmp_path / "b0.weights.h5")
  finally:
    variance.assign(saved)
  with pytest.raises(weights.WeightsError, match="normalization/mean .* not ImageNet's"):
    weights.convert("keras", str(tmp_path / "b0.weights.h5"), "efficientnet_b0")
