"""A run whose workdir is `gs://...`: everything it writes goes to the bucket, and it resumes from there.

The bucket is a Cloud Storage emulator on 127.0.0.1 (`gcp-storage-emulator`, in memory, started in this
process): the real `gs://` code paths (epath through gcsfs, orbax through TensorStore's gcs driver)
with no network. `STORAGE_EMULATOR_HOST` points gcsfs at it, `TENSORSTORE_GCS_HTTP_URL` TensorStore.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from etils import epath

pytest.importorskip("gcsfs", reason="gs:// workdirs need gcsfs (the gcs extra)")
emulator = pytest.importorskip("gcp_storage_emulator.server", reason="the test extra's storage emulator")
from gcp_storage_emulator.handlers import objects as gcs_objects  # noqa: E402

from learned_rules import checkpointing, files, metrics, pretrained  # noqa: E402

BUCKET = "learned-rules-test"


def _download_with_generation(original):
  """The emulator's object download, with the `x-goog-generation` header that Cloud Storage sends and
  TensorStore reads (the emulator leaves it out: "Malformed StorageGeneration" on some reads)."""

  def download(request, response, storage, *args, **kwargs):
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = obj["generation"]
      response["x-goog-metageneration"] = obj["metageneration"]
    except Exception:  # noqa: BLE001  (a missing object: the original answers 404)
      pass
    return original(request, response, storage, *args, **kwargs)

  return download


@pytest.fixture(scope="module")
def gcs():
  """`(env, bucket URL)`: the emulator's environment for subprocesses (also set in this process)."""
  patch = pytest.MonkeyPatch()
  patch.setattr(gcs_objects, "download", _download_with_generation(gcs_objects.download))
  server = emulator.create_server("127.0.0.1", 0, in_memory=True, default_bucket=BUCKET)
  server.start()
  httpd = server._api._httpd
  httpd.handle_error = lambda *args: None  # clients that hang up early are not errors
  url = f"http://127.0.0.1:{httpd.server_address[1]}"
  env = {
    "STORAGE_EMULATOR_HOST": url,
    "TENSORSTORE_GCS_HTTP_URL": url,
    "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # TensorStore's fixed test credentials
  }
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  yield env, f"gs://{BUCKET}"
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  server.stop()
  patch.undo()


def test_files_on_a_bucket(gcs):
  _, bucket = gcs
  path = files.join(bucket, "files", "metrics.jsonl")
  assert files.is_remote(path) and path == f"{bucket}/files/metrics.jsonl"
  writer = metrics.MetricsWriter(files.join(bucket, "files"))
  writer.write(1, loss=2.0)
  writer.write(2, loss=1.0)  # an object store cannot append: the file is rewritten whole
  assert [r["step"] for r in metrics.read_metrics(path)] == [1, 2]
  assert files.free_bytes(bucket) is None
  checkpointing.check_workdir(files.join(bucket, "files"), needed_bytes=10**15)  # no size check remotely
  assert sorted(p.name for p in files.as_path(files.join(bucket, "files")).iterdir()) == ["metrics.jsonl"]


def test_checkpoints_on_a_bucket_restore(gcs, make_cfg):
  _, bucket = gcs
  ckpt = checkpointing.Checkpointer(files.join(bucket, "ckpt"))
  state = {"w": jax.numpy.arange(6.0).reshape(2, 3), "step": jax.numpy.asarray(3)}
  ckpt.save(3, state, make_cfg("tiny"))
  assert ckpt.all_steps() == [3] and ckpt.directory == f"{bucket}/ckpt/checkpoints"
  restored = ckpt.restore(jax.tree.map(jax.numpy.zeros_like, state))
  np.testing.assert_array_equal(restored["w"], state["w"])
  ckpt.close()


@pytest.mark.slow  # two runs of the command: about a minute
def test_remember_writes_to_the_bucket_and_resumes(gcs, repo_root, tmp_path):
  """The command as a pod user runs it (BUILD.md): its config, metrics, event files, curve, summary and
  checkpoints land in the bucket, nothing under a local `gs:` folder, and a rerun resumes."""
  env, bucket = gcs
  workdir = f"{bucket}/runs/tiny"
  command = [
    sys.executable, "-m", "experiments.remember", "--config=learned_rules/configs/remember.py:tiny",
    f"--workdir={workdir}", "--config.baseline_synapses_off=False", "--config.train.log_every=1",
  ]  # fmt: skip

  def run(steps: int) -> subprocess.CompletedProcess:
    done = subprocess.run(
      [*command, f"--config.train.num_steps={steps}"],
      cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done

  run(2)
  names = {p.name for p in files.as_path(workdir).iterdir()}
  assert {"config.json", "metrics.jsonl", "summary.json", "checkpoints"} <= names
  assert any(n.startswith("events.out.tfevents.") for n in names)
  assert "training_curve.png" in names
  assert not os.path.exists(tmp_path / "gs:")  # nothing written to a local look-alike path
  second = run(4)
  assert "resumed from step 2" in second.stderr
  # This process listed the files the rerun rewrote: gcsfs would read them at their listed sizes.
  epath.backend.fsspec_backend.fs(workdir).invalidate_cache()
  assert files.read_json(files.join(workdir, "summary.json"))["meta_steps"] == 4
  steps = [r["step"] for r in metrics.read_metrics(files.join(workdir, "metrics.jsonl")) if "loss" in r]
  assert steps == [1, 2, 3, 4]


def test_rules_save_to_and_load_from_a_bucket(gcs):
  _, bucket = gcs
  rule = pretrained.load_rule("hetero")
  json_path, _ = pretrained.save_rule(rule, files.join(bucket, "rules", "mine"), note="remote")
  assert json_path == f"{bucket}/rules/mine.json"
  loaded = pretrained.load_rule(json_path)
  assert loaded.info["note"] == "remote" and loaded.meta_steps == rule.meta_steps
  for a, b in zip(jax.tree.leaves(loaded.theta), jax.tree.leaves(rule.theta), strict=True):
    np.testing.assert_array_equal(a, b)
