"""What must hold on every backend: compiled steps, repeatable seeds, and
models that move between backends."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_attention_sampling as kas

BACKEND = keras.backend.backend()
ALL_BACKENDS = ("tensorflow", "jax", "torch")


def tiny_model(**kwargs):
    return kas.AttentionSamplingModel(
        3,
        scale=4,
        n_patches=3,
        patch_size=8,
        samples_per_image=2,
        seed=0,
        attention_network=kas.AttentionMap(blocks=1, filters=4),
        **kwargs,
    )


def tiny_data():
    rng = np.random.default_rng(0)
    return rng.random((8, 32, 32, 3)).astype("float32"), np.arange(8) % 3


@pytest.mark.skipif(BACKEND == "torch", reason="jit_compile is for TF (XLA) and JAX")
def test_jit_compiled_training_with_seeded_sampling():
    x, y = tiny_data()
    model = tiny_model()
    model.compile(jit_compile=True, metrics=["accuracy"])
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert model.jit_compile
    assert np.all(np.isfinite(history.history["loss"]))
    # Sampling inside the compiled step still advances the seed: two
    # predictions of the same batch draw different patches.
    first = model.explain(x[:2])["positions"]
    second = model.explain(x[:2])["positions"]
    assert not np.array_equal(first, second)


def _train_history():
    keras.utils.set_random_seed(7)
    x, y = tiny_data()
    model = tiny_model()
    model.compile()
    history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    return history.history, [keras.ops.convert_to_numpy(w) for w in model.weights]


def test_same_seeds_give_the_same_run():
    first_history, first_weights = _train_history()
    second_history, second_weights = _train_history()
    assert first_history == second_history
    for a, b in zip(first_weights, second_weights):
        np.testing.assert_array_equal(a, b)


_SAVE_ON_BACKEND = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    import keras_attention_sampling as kas
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(0)
    x = rng.random((6, 32, 32, 3)).astype("float32")
    y = np.arange(6) % 3
    model = kas.AttentionSamplingModel(
        3, scale=4, n_patches=3, patch_size=8, samples_per_image=2, seed=0,
        inference_sampling="top_k", attention_network=kas.AttentionMap(blocks=1, filters=4))
    model.compile()
    model.fit(x, y, batch_size=3, epochs=1, verbose=0)
    model.save(sys.argv[1])
    np.save(sys.argv[2], x)
    np.save(sys.argv[3], model.predict(x, verbose=0))
    """
)


@pytest.mark.parametrize("source", [b for b in ALL_BACKENDS if b != BACKEND])
def test_model_saved_on_another_backend_predicts_the_same_here(tmp_path, source):
    pytest.importorskip(source)  # each backend is a module of its name
    paths = [str(tmp_path / name) for name in ("model.keras", "x.npy", "p.npy")]
    env = dict(os.environ, KERAS_BACKEND=source)
    done = subprocess.run(
        [sys.executable, "-c", _SAVE_ON_BACKEND, *paths],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    model = keras.models.load_model(paths[0])
    x = np.load(paths[1])
    np.testing.assert_allclose(
        model.predict(x, verbose=0), np.load(paths[2]), rtol=1e-4, atol=1e-5
    )
    assert int(model.attention_optimizer.iterations) == 2


# Three SGD steps of a saved model with the draws fixed by numpy: Gumbel noise
# seeded by the shape of the log-probabilities, so that every backend draws
# the same cells (its own random streams differ) and any difference left is
# in the training step's maths.
_STEPS_WITH_FIXED_DRAWS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    from keras import ops
    from keras_attention_sampling import sampling

    def fixed_draws(log_probs, n_patches, replace=True, seed=None):
        shape = tuple(int(d) for d in log_probs.shape)
        noise = np.random.default_rng(shape).gumbel(size=(n_patches,) + shape)
        noise = ops.convert_to_tensor(noise.astype("float32"))
        log_probs = ops.cast(log_probs, "float32")
        if replace:
            scores = ops.expand_dims(log_probs, 0) + noise
            return ops.transpose(ops.cast(ops.argmax(scores, axis=-1), "int32"))
        return sampling.top_cells(log_probs + noise[0], n_patches)

    sampling.sample_cells = fixed_draws
    data = np.load(sys.argv[1])
    for model_path, out_path in zip(sys.argv[2::2], sys.argv[3::2]):
        model = keras.models.load_model(model_path, compile=False)
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            attention_optimizer=keras.optimizers.SGD(0.1),
        )
        model.fit(data["x"], data["y"], batch_size=4, shuffle=False, verbose=0)
        np.savez(out_path, *[ops.convert_to_numpy(w) for w in model.weights])
    """
)
_ESTIMATORS = ("expectation", "reinforce")


def _steps_with_fixed_draws(backend, folder):
    """Weights of each estimator's model after the steps, run on `backend`."""
    paths = [str(folder / "data.npz")]
    for estimator in _ESTIMATORS:
        paths += [
            str(folder / f"{estimator}.keras"),
            str(folder / f"{backend}-{estimator}.npz"),
        ]
    done = subprocess.run(
        [sys.executable, "-c", _STEPS_WITH_FIXED_DRAWS, *paths],
        env=dict(os.environ, KERAS_BACKEND=backend),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    weights = {}
    for estimator in _ESTIMATORS:
        with np.load(folder / f"{backend}-{estimator}.npz") as saved:
            weights[estimator] = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    return weights


@pytest.fixture(scope="module")
def fixed_draw_models(tmp_path_factory):
    """Both estimators' untrained models, saved here; their weights, which of
    them are the attention network's, and the weights after the steps on this
    backend."""
    folder = tmp_path_factory.mktemp("fixed_draws")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 64, 64, 3), dtype="uint8")
    np.savez(folder / "data.npz", x=x, y=np.arange(12) % 3)
    before, attention = {}, {}
    for estimator in _ESTIMATORS:
        model = tiny_model(estimator=estimator)
        model.build(x.shape)
        model.save(folder / f"{estimator}.keras")
        before[estimator] = [keras.ops.convert_to_numpy(w) for w in model.weights]
        mine = {id(w) for w in model.attention_network.weights}
        attention[estimator] = [i for i, w in enumerate(model.weights) if id(w) in mine]
    return folder, before, attention, _steps_with_fixed_draws(BACKEND, folder)


@pytest.mark.parametrize("other", [b for b in ALL_BACKENDS if b != BACKEND])
def test_training_steps_match_another_backend_given_the_same_draws(request, other):
    # Learning curves differ between backends because their seeds draw
    # different cells; given the same cells, the steps must agree, or one
    # backend's gradient plumbing is wrong.
    pytest.importorskip(other)  # each backend is a module of its name
    # The fixture trains here only once a backend to compare with is there.
    folder, before, attention, here = request.getfixturevalue("fixed_draw_models")
    there = _steps_with_fixed_draws(other, folder)
    for estimator in _ESTIMATORS:
        updates_here = [a - b for a, b in zip(here[estimator], before[estimator])]
        updates_there = [a - b for a, b in zip(there[estimator], before[estimator])]
        largest = max(np.abs(u).max() for u in updates_here)
        # The attention network's own gradient moved it, so agreement is not
        # that of weights that stayed put.
        moved = max(np.abs(updates_here[i]).max() for i in attention[estimator])
        assert moved > 1e-3, (estimator, moved)
        for index, (a, b) in enumerate(zip(updates_here, updates_there)):
            np.testing.assert_allclose(
                a,
                b,
                rtol=0,
                atol=1e-4 * largest,
                err_msg=f"{estimator}, weight {index}",
            )
