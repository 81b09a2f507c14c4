"""Data-parallel training on existing engines is exact, draws independent
cells on each replica, and loses nothing; two processes train as one.

Each check runs `tests/distributed_worker.py` in a fresh process, since the
devices (two logical CPUs for TensorFlow, two forced host devices for JAX)
must be set up before the backend is imported. PyTorch has no data-parallel
path in Keras 3.15; its error is tested instead.
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
parallel = pytest.mark.skipif(
    BACKEND == "torch", reason="Keras 3.15 has no data-parallel path for torch"
)


def _env():
    return dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=os.path.dirname(WORKER))


def run(mode, tmp_path, *arguments, timeout=600):
    name = "".join(f"-{a}" for a in arguments).replace("/", "_")
    out = tmp_path / f"{mode}{name}.json"
    done = subprocess.run(
        [sys.executable, WORKER, mode, str(out), *map(str, arguments)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@parallel
def test_one_data_parallel_step_equals_one_step_on_one_device(tmp_path):
    names = [
        "functional/reinforce/mean",
        "functional/reinforce/moving_average",
        "model/expectation/mean",
        "model/reinforce/leave_one_out",
    ]
    cases = {}
    # One process per case on TensorFlow (see distributed_worker.exact), all
    # in one on JAX.
    for name in names if BACKEND == "tensorflow" else ["all"]:
        cases.update(run("exact", tmp_path, name))
    assert sorted(cases) == names
    for case, result in cases.items():
        assert result["moved"] > 1e-3, case  # the step moved the weights
        # Same weights after the step: the loss, the surrogate, the entropy
        # term and the global batch-mean baseline are all scaled as on one
        # device; the leave-one-out baseline is per image either way.
        assert result["difference"] < 1e-4, (case, result)
        for metric in ("loss", "accuracy", "entropy", "reward"):
            assert result["parallel"][metric] == pytest.approx(
                result["single"][metric], rel=1e-4, abs=1e-6
            ), (case, metric)


@parallel
def test_replicas_draw_independent_cells(tmp_path):
    predictions = np.array(run("independent", tmp_path)["predictions"])
    # Images 0 and 4 are one image at the same place of the two replicas'
    # shards: with a shared seed state they would draw the same cells.
    assert not np.allclose(predictions[0], predictions[4])


@parallel
def test_a_data_parallel_checkpoint_resumes_on_one_device_and_in_parallel(tmp_path):
    # Also: `explain` of the data-parallel model, and of the one loaded on one
    # device, predicts what `predict` does.
    result = run("checkpoint", tmp_path)
    assert result["single_difference"] < 1e-5  # same top-k predictions
    assert result["explain_difference"] < 1e-5
    assert result["single_explain_difference"] < 1e-5
    np.testing.assert_allclose(result["explain_attention_sums"], 1.0, rtol=1e-5)
    assert result["single_iterations"] == 1
    assert result["single_resumed_iterations"] == 2
    assert result["parallel_resumed_iterations"] == 2


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _two_workers(tmp_path):
    """Runs the two `worker` processes together; returns what each wrote."""
    ports = ",".join(str(p) for p in _free_ports(2))
    outs = [tmp_path / f"worker-{i}.json" for i in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, WORKER, "worker", str(out), str(i), ports],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, out in enumerate(outs)
    ]
    try:
        for worker in workers:
            _, stderr = worker.communicate(timeout=300)
            assert worker.returncode == 0, stderr[-3000:]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    return [json.loads(out.read_text()) for out in outs]


@parallel
def test_two_processes_train_together_like_one(tmp_path):
    first, second = (result["weights"] for result in _two_workers(tmp_path))
    single = run("single", tmp_path)["weights"]
    for a, b, c in zip(first, second, single):
        np.testing.assert_array_equal(np.array(a), np.array(b))
        np.testing.assert_allclose(np.array(a), np.array(c), rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch backend's error")
def test_torch_refuses_data_parallel_training_with_a_clear_error(tmp_path):
    errors = [result["error"] for result in _two_workers(tmp_path)]
    for error in errors:
        assert "not available on the PyTorch backend" in error
        assert "keras.distribution.DataParallel" in error
