"""Runs one distributed check in a fresh process; `tests/test_distribution.py`
drives it. The devices must be set up before the backend is imported, which
a test process that already imported it cannot do.

    python distributed_worker.py MODE OUT.json [CASE | WORKER PORTS]

Modes (the backend comes from KERAS_BACKEND):

- `exact`: one SGD step on a global batch, on one device and data-parallel
  on two (TF: `MirroredStrategy` over two logical CPUs; JAX:
  `keras.distribution.DataParallel` over two forced host devices), from the
  same weights, with draws made identical by a top-k sampler; writes the
  largest relative weight difference and both sets of metrics, for the
  functional model and for `AttentionSamplingModel`. CASE names one of
  `CASES` as `model/estimator/baseline` (the key of its result), or is
  `all` (the default).
- `independent`: `predict` of 8 copies of one image under the strategy, with
  sampled patches; writes the predictions (images 0 and 4 sit on different
  replicas).
- `checkpoint`: trains data-parallel with a `.keras` checkpoint, then loads
  it on one device and data-parallel, trains on, and compares top-k
  predictions, and those of `explain` under the distribution and on one
  device.
- `worker`: one of two processes on 127.0.0.1 (JAX: `jax.distributed`; TF:
  `TF_CONFIG` and `MultiWorkerMirroredStrategy`) training one step together
  on the global batch; `single`: the same step in one process on one device.
  Both write the updated weights. On PyTorch, `worker` joins a two-process
  `torch.distributed` group and writes the error `fit` raises.
"""

import json
import os
import sys

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
MODE, OUT = sys.argv[1], sys.argv[2]
CASE = sys.argv[3] if MODE == "exact" and len(sys.argv) > 3 else "all"
WORKER = int(sys.argv[3]) if MODE != "exact" and len(sys.argv) > 3 else 0
PORTS = [int(p) for p in sys.argv[4].split(",")] if len(sys.argv) > 4 else []

if BACKEND == "jax" and MODE != "worker":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if BACKEND == "tensorflow" and MODE == "worker":
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{port}" for port in PORTS]},
            "task": {"type": "worker", "index": WORKER},
        }
    )
if BACKEND == "jax" and MODE == "worker":
    import jax

    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{PORTS[0]}", num_processes=2, process_id=WORKER
    )

import contextlib  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_attention_sampling as kas  # noqa: E402

keras.config.disable_traceback_filtering()

if BACKEND == "tensorflow" and MODE != "worker":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )


def strategy_scope():
    """The data-parallel scope of this backend and mode."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        if MODE == "worker":
            return tf.distribute.MultiWorkerMirroredStrategy().scope()
        return tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"]).scope()
    import jax

    # Two processes feed their own halves of the global batch (`worker`).
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(
            devices=jax.devices(), auto_shard_dataset=MODE != "worker"
        )
    )
    return contextlib.nullcontext()


def single_scope():
    if BACKEND == "jax":
        keras.distribution.set_distribution(None)
    return contextlib.nullcontext()


@keras.saving.register_keras_serializable(package="tests")
class TopKSampler(kas.PatchSampler):
    """Draws the top-k cells in training too: the draws cannot differ."""

    def sample(self, log_probs, training=None):
        return super().sample(log_probs, training=False)


def data():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (8, 32, 32, 3)).astype("uint8"), np.arange(8) % 3


def backbone():
    return keras.Sequential(
        [
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalMaxPooling2D(),
        ]
    )


def functional_model(**settings):
    images = keras.Input((32, 32, 3), dtype="uint8")
    rescaling = keras.layers.Rescaling(1 / 255, offset=-0.5)
    view = rescaling(kas.Downsample(4)(images))
    attention = kas.AttentionMap(blocks=1, filters=4)(view)
    patches, weights, _ = TopKSampler(3, 8, inference_sampling="top_k")(
        [attention, images]
    )
    features = kas.NormalizedFeature(3, backbone=backbone())(rescaling(patches))
    outputs = kas.WeightedLogitPool(3.0)([features, weights])
    return kas.PolicyGradientModel(images, outputs, **settings)


def sampling_model(**settings):
    model = kas.AttentionSamplingModel(
        3,
        scale=4,
        n_patches=3,
        patch_size=8,
        seed=0,
        inference_sampling="top_k",
        attention_network=kas.AttentionMap(blocks=1, filters=4),
        feature_network=kas.NormalizedFeature(3, backbone=backbone()),
        **settings,
    )
    # Top-k draws in training too, so they cannot differ between devices.
    sampler = model.sampler
    model.sampler.sample = lambda log_probs, training=None: kas.PatchSampler.sample(
        sampler, log_probs, training=False
    )
    return model


def compiled(model, x):
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        attention_optimizer=keras.optimizers.SGD(0.1),
        metrics=["accuracy"],
    )
    model.build(x.shape)
    return model


def one_step(make, weights, x, y):
    keras.utils.set_random_seed(0)
    model = compiled(make(), x)
    model.set_weights(weights)
    logs = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    return [np.array(w) for w in model.get_weights()], {
        k: v[0] for k, v in logs.items()
    }


def relative_difference(a, b):
    """Largest difference of a weight relative to that weight's size (or to
    1e-3 for weights that are almost 0, such as a fresh bias)."""
    return max(
        float(np.abs(p - q).max() / max(np.abs(q).max(), 1e-3)) for p, q in zip(a, b)
    )


# (model, estimator, baseline): the functional graph (REINFORCE, from its
# WeightedLogitPool) and AttentionSamplingModel; the batch-mean baseline
# (global under data parallelism), its moving average (a variable written in
# the step) and leave-one-out (per image); and the expectation estimator,
# which has no baseline.
CASES = (
    ("model", "expectation", "mean"),
    ("functional", "reinforce", "mean"),
    ("functional", "reinforce", "moving_average"),
    ("model", "reinforce", "leave_one_out"),
)


def exact():
    x, y = data()
    results = {}
    # On TensorFlow one case per process (the third argument): under
    # MirroredStrategy, steps of two models with different collectives traced
    # in one process can be given mismatched collective instance keys, which
    # aborts. JAX has no such state, and runs them all in one process.
    chosen = [case for case in CASES if CASE in ("all", "/".join(case))]
    if not chosen:
        raise SystemExit(f"distributed_worker.py: no case {CASE!r} in {CASES}")
    for name, estimator, baseline in chosen:
        make = functional_model if name == "functional" else sampling_model
        settings = {"baseline": baseline, "samples_per_image": 2}
        if name == "model":
            settings["estimator"] = estimator

        def build(make=make, settings=settings):
            return make(**settings)

        keras.utils.set_random_seed(0)
        with single_scope():
            start = [np.array(w) for w in compiled(build(), x).get_weights()]
            single, single_logs = one_step(build, start, x, y)
        with strategy_scope():
            parallel, parallel_logs = one_step(build, start, x, y)
        results[f"{name}/{estimator}/{baseline}"] = {
            "moved": relative_difference(single, start),
            "difference": relative_difference(parallel, single),
            "single": single_logs,
            "parallel": parallel_logs,
        }
    return results


def independent():
    x, _ = data()
    copies = np.repeat(x[:1], 8, axis=0)
    with strategy_scope():
        model = kas.AttentionSamplingModel(
            3, scale=4, n_patches=3, patch_size=8, seed=0
        )
        model.compile()
        predictions = model.predict(copies, batch_size=8, verbose=0)
    return {"predictions": predictions.tolist()}


def steps(model):
    return int(
        np.array(keras.ops.convert_to_numpy(model.attention_optimizer.iterations))
    )


def checkpoint():
    x, y = data()
    path = os.path.join(os.path.dirname(OUT), "checkpoint.keras")
    with strategy_scope():
        model = compiled(
            kas.AttentionSamplingModel(
                3,
                scale=4,
                n_patches=3,
                patch_size=8,
                seed=0,
                inference_sampling="top_k",
            ),
            x,
        )
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=1,
            verbose=0,
            callbacks=[keras.callbacks.ModelCheckpoint(path)],
        )
        trained = model.predict(x, verbose=0)
        # `explain` under the distribution (on JAX its own compiled program)
        # gives the prediction `predict` gives.
        explained = model.explain(x, batch_size=4)
    results = {
        "explain_difference": float(np.abs(explained["probabilities"] - trained).max()),
        "explain_attention_sums": np.sum(explained["attention"], axis=(1, 2)).tolist(),
    }
    with single_scope():
        loaded = keras.models.load_model(path)
        results["single_difference"] = float(
            np.abs(loaded.predict(x, verbose=0) - trained).max()
        )
        results["single_iterations"] = steps(loaded)
        results["single_explain_difference"] = float(
            np.abs(loaded.explain(x, batch_size=4)["probabilities"] - trained).max()
        )
        loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
        results["single_resumed_iterations"] = steps(loaded)
    with strategy_scope():
        loaded = keras.models.load_model(path)
        loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
        results["parallel_resumed_iterations"] = steps(loaded)
    return results


def worker():
    """Process WORKER of two, or (`single`) one process with the whole batch."""
    x, y = data()
    if BACKEND == "torch":
        import torch

        torch.distributed.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{PORTS[0]}", rank=WORKER, world_size=2
        )
        model = compiled(functional_model(), x)
        try:
            model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        except RuntimeError as error:
            return {"error": str(error)}
        finally:
            torch.distributed.destroy_process_group()
        return {"error": None}
    keras.utils.set_random_seed(0)
    scope = strategy_scope() if MODE == "worker" else single_scope()
    with scope:
        model = compiled(functional_model(samples_per_image=2), x)
        if MODE == "worker" and BACKEND == "jax":
            # Each process feeds its own half of the global batch.
            half = slice(4 * WORKER, 4 * WORKER + 4)
            model.fit(
                x[half], y[half], batch_size=4, epochs=1, shuffle=False, verbose=0
            )
        else:
            model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        weights = [np.array(w).tolist() for w in model.get_weights()]
    return {"weights": weights}


if __name__ == "__main__":
    run = {
        "exact": exact,
        "independent": independent,
        "checkpoint": checkpoint,
        "worker": worker,
        "single": worker,
    }[MODE]
    with open(OUT, "w") as handle:
        json.dump(run(), handle)
