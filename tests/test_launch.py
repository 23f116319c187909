"""launch/: the TPU pod, SLURM and local multi-process launchers, run against fake `gcloud`,
`srun` and `python` programs that record how they were called (no cloud, cluster or training:
tests/test_main.py runs two real processes)."""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO

ARGS = ["--config=configs/demo.py", "--workdir=gs://b/run", "--config.train.num_steps=5",
        "--note=it's a $HOME \"test\""]  # the last: quotes and a $ must reach the workers intact
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_CONFIG_NOSYSTEM": "1"}  # no user settings (signing, hooks) in the test's commit

# Records its arguments, working directory and SLURM_* variables as one JSON line in $LOG_<name>.
RECORDER = f"""#!{sys.executable}
import json, os, shutil, sys
call = {{"argv": sys.argv[1:], "cwd": os.getcwd(),
         "env": {{k: v for k, v in os.environ.items() if k.startswith("SLURM_")}}}}
with open(os.environ["LOG_" + os.path.basename(sys.argv[0]).replace("-", "_")], "a") as f:
  f.write(json.dumps(call) + "\\n")
"""
# gcloud as one TPU worker whose home is $WORKER_HOME: scp copies, ssh runs --command in `sh`.
FAKE_GCLOUD = RECORDER + """
if os.environ.get("GCLOUD_MUST_NOT_RUN"):
  sys.exit("fake gcloud: called on a dry run")
args, home = sys.argv[1:], os.environ["WORKER_HOME"]
if args[3] == "scp":
  shutil.copy(args[4], os.path.join(home, args[5].split(":", 1)[1]))
else:
  command = [a for a in args if a.startswith("--command=")][0].split("=", 1)[1]
  os.chdir(home)  # where ssh starts
  sys.exit(os.spawnvpe(os.P_WAIT, "sh", ["sh", "-c", command], {**os.environ, "HOME": home}))
"""
# The worker's python3: `-m venv DIR` makes DIR/bin/python, a recorder.
FAKE_PYTHON3 = RECORDER + """
if sys.argv[1:3] == ["-m", "venv"]:
  os.makedirs(sys.argv[3] + "/bin")
  with open(sys.argv[3] + "/bin/python", "w") as f:
    f.write(open(os.environ["RECORDER"]).read())
  os.chmod(sys.argv[3] + "/bin/python", 0o755)
"""


def _program(path: Path, text: str) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)
  return path


def _calls(log: Path) -> list[dict]:
  return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture(name="pod")
def fixture_pod(tmp_path):
  """A git checkout holding launch/tpu_pod.sh, a fake gcloud on PATH and a fake worker."""
  checkout = tmp_path / "checkout"
  (checkout / "launch").mkdir(parents=True)
  shutil.copy(REPO / "launch" / "tpu_pod.sh", checkout / "launch")
  (checkout / "setup.py").write_text("# the code\n")
  env = {**os.environ, **GIT_ENV}
  for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "code"]):
    subprocess.run(["git", *cmd], cwd=checkout, env=env, check=True)
  commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=checkout, env=env,
                          check=True, capture_output=True, text=True).stdout.strip()
  bin_dir, home = tmp_path / "bin", tmp_path / "worker"
  home.mkdir()
  _program(bin_dir / "gcloud", FAKE_GCLOUD)
  _program(bin_dir / "fake-python3", FAKE_PYTHON3)
  env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", WORKER_HOME=str(home),
             LOG_gcloud=str(tmp_path / "gcloud.log"), LOG_python=str(tmp_path / "python.log"),
             RECORDER=str(_program(bin_dir / "python", RECORDER)),
             REMOTE_PYTHON=str(bin_dir / "fake-python3"), LOG_fake_python3=os.devnull)
  for name in ("DRY_RUN", "ALLOW_DIRTY", "PROJECT", "REMOTE_DIR", "PIP_EXTRA"):
    env.pop(name, None)

  def launch(*args, **extra_env):
    return subprocess.run(["launch/tpu_pod.sh", *args], cwd=checkout, env={**env, **extra_env},
                          capture_output=True, text=True, timeout=60)

  launch.checkout, launch.commit, launch.home = checkout, commit, home
  launch.gcloud_log, launch.python_log = tmp_path / "gcloud.log", tmp_path / "python.log"
  return launch


@pytest.mark.parametrize("dry_run", [{"DRY_RUN": "1"}, {"flag": "--dry-run"}])
def test_tpu_pod_dry_run_prints_every_command_and_runs_none(pod, dry_run):
  flags = [dry_run["flag"]] if "flag" in dry_run else []
  env = {k: v for k, v in dry_run.items() if k != "flag"}
  out = pod(*flags, "my-tpu", "us-central2-b", *ARGS, GCLOUD_MUST_NOT_RUN="1", **env)
  assert out.returncode == 0, out.stderr
  assert not pod.gcloud_log.exists()  # never called
  assert out.stderr == ""  # a clean checkout, a gs:// run directory: nothing to warn about
  archive, folder = f"agg_jax-{pod.commit}.tar.gz", f"agg_jax/{pod.commit}"
  git, scp, install, run = [shlex.split(line) for line in out.stdout.splitlines()]
  assert git[:4] == ["git", "-C", str(pod.checkout), "archive"] and git[-1] == pod.commit
  where = ["--worker=all", "--zone=us-central2-b"]
  assert git[5] == f"--output={scp[5]}" and scp[5].endswith("/" + archive)
  assert scp[:5] + scp[6:] == ["gcloud", "compute", "tpus", "tpu-vm", "scp", f"my-tpu:{archive}",
                               *where]
  assert install[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
  assert install[6:8] == run[6:8] == where and run[:6] == install[:6]
  assert install[8].startswith("--command=") and len(install) == len(run) == 9
  assert f"tar -xzf \"$HOME\"/{archive}" in install[8]
  assert "-m venv .venv" in install[8] and "pip install" in install[8]
  assert "python -m agg_jax.main --distributed" in run[8]
  assert shlex.split(run[8].removeprefix("--command=")) == [
      "cd", folder, "&&", ".venv/bin/python", "-m", "agg_jax.main", "--distributed", *ARGS]


def test_tpu_pod_ships_installs_once_and_runs_the_same_command(pod):
  """The commands that run are those a dry run prints; the fake worker then holds the commit,
  installed in its own venv (once), and ran agg_jax.main with the arguments as given."""
  printed = pod("--dry-run", "my-tpu", "us-central2-b", *ARGS).stdout.splitlines()[1:]
  out = pod("my-tpu", "us-central2-b", *ARGS)
  assert out.returncode == 0, out.stderr
  calls = [["gcloud", *c["argv"]] for c in _calls(pod.gcloud_log)]
  same_archive = lambda argv: [Path(a).name if a.endswith(".tar.gz") else a for a in argv]
  assert [same_archive(c) for c in calls] == [same_archive(shlex.split(p)) for p in printed]
  folder = pod.home / "agg_jax" / pod.commit
  assert (folder / "launch" / "tpu_pod.sh").is_file() and (folder / ".venv" / ".installed").exists()
  assert not list(pod.home.glob("*.tar.gz"))  # unpacked, then removed
  assert not Path(calls[0][5]).parent.exists()  # nor the local one
  pip = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", ".", "jax[tpu]"]
  main = ["-m", "agg_jax.main", "--distributed", *ARGS]
  assert [(c["argv"], c["cwd"]) for c in _calls(pod.python_log)] == [
      (pip, str(folder)), (main, str(folder))]

  again = pod("my-tpu", "us-central2-b", *ARGS)  # the same commit: installed already
  assert again.returncode == 0, again.stderr
  assert f"agg_jax/{pod.commit} is installed" in again.stdout
  assert [c["argv"] for c in _calls(pod.python_log)] == [pip, main, main]


def test_tpu_pod_options(pod):
  out = pod("--dry-run", "my-tpu", "z", "--workdir=runs/x", PROJECT="p", REMOTE_DIR="/opt/a j",
            PIP_EXTRA="", REMOTE_PYTHON="python3.11")
  assert out.returncode == 0, out.stderr
  assert "every host must see the same run directory" in out.stderr  # not on gs://
  _, scp, install, run = [shlex.split(line) for line in out.stdout.splitlines()]
  assert all("--project=p" in argv for argv in (scp, install, run))
  assert f"cd '/opt/a j/{pod.commit}' &&" in run[-1]
  assert "python3.11 -m venv" in install[-1] and "-e . &&" in install[-1]  # no extra package


def test_tpu_pod_refuses_uncommitted_changes_unless_allowed(pod):
  (pod.checkout / "setup.py").write_text("# edited\n")
  out = pod("my-tpu", "z", *ARGS, GCLOUD_MUST_NOT_RUN="1")
  assert out.returncode == 2 and not pod.gcloud_log.exists()
  assert "uncommitted changes" in out.stderr and "--allow-dirty" in out.stderr
  out = pod("--dry-run", "--allow-dirty", "my-tpu", "z", *ARGS)
  assert out.returncode == 0, out.stderr
  assert f"the workers run commit {pod.commit}" in out.stderr


@pytest.mark.parametrize("args", [[], ["my-tpu"], ["--bogus", "my-tpu", "z"]])
def test_tpu_pod_usage_mistakes(pod, args):
  out = pod(*args, GCLOUD_MUST_NOT_RUN="1")
  assert out.returncode == 2 and out.stdout == "" and not pod.gcloud_log.exists()
  assert out.stderr.startswith("launch/tpu_pod.sh: error: ")
  assert "usage: launch/tpu_pod.sh [--dry-run] [--allow-dirty] TPU_NAME ZONE" in out.stderr


@pytest.fixture(name="slurm")
def fixture_slurm(tmp_path):
  """Runs launch/slurm_gpu.sbatch with bash (as SLURM would) and a fake srun on PATH."""
  bin_dir, venv = tmp_path / "bin", tmp_path / "venv"
  _program(bin_dir / "srun", RECORDER + "sys.exit(int(os.environ.get('SRUN_STATUS', 0)))\n")
  _program(venv / "bin" / "python", RECORDER)
  env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
         "LOG_srun": str(tmp_path / "srun.log"), "LOG_python": str(tmp_path / "python.log"),
         "VENV": str(venv), "SLURM_SUBMIT_DIR": str(REPO), "SLURM_JOB_ID": "4242",
         "SLURM_JOB_NODELIST": "gpu[01-02]"}
  env.pop("JAX_EXTRA", None)

  def sbatch(*args, **extra_env):
    return subprocess.run(["bash", str(REPO / "launch" / "slurm_gpu.sbatch"), *args],
                          cwd=tmp_path, env={**env, **extra_env}, capture_output=True,
                          text=True, timeout=60)

  sbatch.venv, sbatch.srun_log = venv, tmp_path / "srun.log"
  sbatch.python_log = tmp_path / "python.log"
  return sbatch


def test_slurm_runs_one_process_per_task_in_the_venv_installed_once(slurm):
  out = slurm(*ARGS)
  assert out.returncode == 0, out.stderr
  assert [(c["argv"], c["cwd"]) for c in _calls(slurm.python_log)] == [(
      ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", ".",
       "jax[cuda12]"], str(REPO))]  # the first job installs
  srun = _calls(slurm.srun_log)
  assert len(srun) == 1 and srun[0]["cwd"] == str(REPO)  # the submit directory
  assert srun[0]["argv"] == ["--kill-on-bad-exit=1", str(slurm.venv / "bin" / "python"), "-m",
                             "agg_jax.main", "--distributed", *ARGS]
  assert srun[0]["env"]["SLURM_JOB_ID"] == "4242"

  out = slurm("--workdir=runs/x", JAX_EXTRA="cuda13", SRUN_STATUS="3")
  assert out.returncode == 3  # srun's status
  assert len(_calls(slurm.python_log)) == 1  # installed already


def test_slurm_outside_the_checkout_and_without_a_venv(slurm, tmp_path):
  out = slurm("--workdir=runs/x", SLURM_SUBMIT_DIR=str(tmp_path))
  assert out.returncode == 2 and "submit from the repository root" in out.stderr
  assert not slurm.srun_log.exists()
  new_venv = tmp_path / "new"  # created with PYTHON, this test's recorder standing in
  out = slurm("--workdir=runs/x", VENV=str(new_venv), PYTHON=str(slurm.venv / "bin" / "python"))
  assert out.returncode != 0 and not slurm.srun_log.exists()  # the fake made no venv: stop
  assert _calls(slurm.python_log)[0]["argv"] == ["-m", "venv", str(new_venv)]


def test_slurm_asks_for_one_task_per_gpu_each_seeing_the_whole_node():
  """JAX's SLURM detection gives task SLURM_LOCALID the GPU of that number among those it sees:
  with --gpus-per-task=1 every task sees one GPU and all but the first fail."""
  text = (REPO / "launch" / "slurm_gpu.sbatch").read_text()
  sbatch = dict(re.findall(r"^#SBATCH --([a-z-]+)=(\S+)", text, re.M))
  assert sbatch["ntasks-per-node"] == sbatch["gpus-per-node"]
  assert "gpus-per-task" not in sbatch


def test_jax_reads_the_slurm_variables_the_sbatch_script_documents(monkeypatch):
  from jax._src.clusters import slurm_cluster  # pylint: disable=import-outside-toplevel
  env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[01-02]", "SLURM_NTASKS": "16",
         "SLURM_PROCID": "9", "SLURM_LOCALID": "1"}
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  cluster = slurm_cluster.SlurmCluster
  assert cluster.is_env_present()
  assert cluster.get_coordinator_address(None, None) == f"gpu01:{61440 + 4242 % 4096}"
  assert (cluster.get_process_count(), cluster.get_process_id(),
          cluster.get_local_process_id()) == (16, 9, 1)
  monkeypatch.delenv("SLURM_LOCALID")  # the batch step (no srun) is not a task
  assert not cluster.is_env_present()


# A process of launch/local_processes.sh: records its pid; --process_id=1 fails once the others
# have started (they, like a JAX process that joined the job, only note SIGTERM).
FAKE_PROCESS = """#!/usr/bin/env bash
for a in "$@"; do [[ $a == --process_id=* ]] && id=${a#*=}; done
echo "$$ $*" > "$PIDS/$id"
if [[ $id == 1 && $FAIL == 1 ]]; then
  until (($(ls "$PIDS" | wc -l) == 3)); do sleep 0.05; done
  echo "agg_jax.main: error: bad" >&2; exit 3
fi
[[ $FAIL == 0 ]] && exit 0
trap '' TERM
exec sleep 120
"""


def _local(tmp_path, *args, fail, **extra_env):
  pids = tmp_path / "pids"
  pids.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "PORT"}
  env.update(PYTHON=str(_program(tmp_path / "python", FAKE_PROCESS)), PIDS=str(pids),
             FAIL=str(fail), STOP_GRACE_S="1", **extra_env)
  return [str(REPO / "launch" / "local_processes.sh"), *args], env, pids


def _gone(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return True
  return False


def _started(pids: Path) -> list[list[str]]:
  return [(pids / str(i)).read_text().split() for i in range(3)]


@pytest.mark.parametrize("fail", [0, 1])
def test_local_processes_one_failure_stops_them_all(tmp_path, fail):
  cmd, env, pids = _local(tmp_path, "3", "--workdir=runs/mp", fail=fail)
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
  assert out.returncode == (3 if fail else 0), out.stderr
  started = _started(pids)
  port = re.search(r"coordinator 127\.0\.0\.1:(\d+)", out.stderr).group(1)
  for i, (_, *argv) in enumerate(started):
    assert argv == ["-m", "agg_jax.main", "--workdir=runs/mp", "--distributed",
                    f"--coordinator_address=127.0.0.1:{port}", "--num_processes=3",
                    f"--process_id={i}"]
  assert all(_gone(int(pid)) for pid, *_ in started)
  if fail:
    assert "a process exited with status 3; stopping the others" in out.stderr


def test_local_processes_ctrl_c_stops_them_all(tmp_path):
  cmd, env, pids = _local(tmp_path, "3", "--workdir=runs/mp", fail=2)  # none exits by itself
  # As from a terminal: a test run started in the background (`make test &`, CI) inherits an
  # ignored SIGINT, which a shell can then neither trap nor receive.
  with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True,
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as proc:
    deadline = time.monotonic() + 30
    while len(list(pids.iterdir())) < 3 and time.monotonic() < deadline:
      time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert "interrupted" in proc.stderr.read()
  assert all(_gone(int(pid)) for pid, *_ in _started(pids))


def test_local_processes_usage_and_port(tmp_path):
  cmd, env, _ = _local(tmp_path, "two", "--workdir=runs/mp", fail=0)
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
  assert out.returncode == 2 and "NUM_PROCESSES must be a positive integer" in out.stderr
  with socket.socket() as busy:
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    cmd[1] = "2"
    out = subprocess.run(cmd, env={**env, "PORT": str(port)}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and f"port {port} is in use" in out.stderr
  out = subprocess.run(cmd, env={**env, "PORT": str(port)}, capture_output=True, text=True,
                       timeout=60)  # free now
  assert out.returncode == 0 and f"coordinator 127.0.0.1:{port}" in out.stderr


def test_local_processes_real_main_takes_the_flags_it_adds(tmp_path):
  """The one real run: agg_jax.main parses the flags the script adds, then stops on a missing
  config in both processes (status 2, one line each), before any JAX work."""
  out = subprocess.run([str(REPO / "launch" / "local_processes.sh"), "2",
                        "--config=configs/missing.py", f"--workdir={tmp_path / 'run'}"],
                       cwd=REPO, env={**os.environ, "PYTHON": sys.executable}, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 2, out.stderr[-3000:]
  assert "Traceback" not in out.stderr
  assert re.search(r"^agg_jax\.main: error: .*configs/missing\.py", out.stderr, re.M), out.stderr
