"""TFDS's shuffler spills a split larger than its memory buffer to disk without TensorFlow."""

import importlib.util

import pytest
from tensorflow_datasets.core import shuffle

from agg_jax.datasets import tfds_compat


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="TensorFlow is installed: TFDS spills through tf.io.gfile itself")
def test_a_split_larger_than_the_buffer_is_written_through_temporary_files(tmp_path, monkeypatch):
  monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1000)  # spill after 1 kB
  monkeypatch.setattr(shuffle, "tf", shuffle.tf)  # restored after the test
  tfds_compat.install()
  shuffler = shuffle.Shuffler(tmp_path, hash_salt="split")
  records = {f"key{i}": bytes([i % 256]) * 100 for i in range(50)}  # 5 kB in all
  for key, data in records.items():
    shuffler.add(key, data)
  assert list(tmp_path.iterdir())  # the buckets were written to disk
  read = [data for _, data in shuffler]
  assert sorted(read) == sorted(records.values())  # every record, once
  assert read != list(records.values())  # in the shuffled order
