"""The autoregressive sampler and the sequence head: exact log-probabilities,
proper conditional maps, the score-function gradient, saving, and learning
the task that independent draws cannot."""

import os
import warnings

import keras
import numpy as np
import pytest
from keras import ops
from layer_testing import gradient, run_layer_test

import keras_attention_sampling as kas

BACKEND = keras.backend.backend()


def _mean_colour(patches):
    return ops.mean(ops.cast(patches, "float32"), axis=(2, 3))  # (B, 1, C)


def _sampler(replace, rng, n=3):
    sampler = kas.AutoregressiveSampler(
        n, 4, state_size=5, embedding_size=8, replace=replace, seed=0
    )
    sampler.build(((2, 3, 4), (2, 12, 16, 3), (2, 3, 3)))
    # Random recurrent and query weights, so that the correction matters.
    for variable in sampler.trainable_variables:
        variable.assign(rng.normal(0, 0.5, variable.shape).astype("float32"))
    return sampler


def _numpy_sequence_log_prob(sampler, base, cells, features, replace):
    """The recurrence of `AutoregressiveSampler`, written out in numpy."""
    kernel, recurrent, bias = (np.array(w) for w in sampler.cell.weights)
    query_kernel, query_bias = (np.array(w) for w in sampler.query.weights)
    units = kernel.shape[1] // 3
    embedding = ops.convert_to_numpy(
        kas.layers.autoregressive_sampler.cell_embedding(3, 4, 8)
    )
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    batch = base.shape[0]
    flat = base.reshape(batch, -1).astype("float64")
    state = np.zeros((batch, units))
    correction = np.zeros_like(flat)
    drawn = np.zeros_like(flat, dtype=bool)
    log_probs = []
    for step in range(cells.shape[1]):
        logits = flat + correction
        if not replace:
            logits = np.where(drawn, -1e30, logits)
        log_p = (
            logits
            - np.log(
                np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)
            )
            - logits.max(1, keepdims=True)
        )
        cell = cells[:, step]
        log_probs.append(log_p[np.arange(batch), cell])
        seen = np.concatenate([features[:, step], embedding[cell]], axis=1)
        x = seen @ kernel + bias[0]
        h = state @ recurrent + bias[1]
        z = sigmoid(x[:, :units] + h[:, :units])
        r = sigmoid(x[:, units : 2 * units] + h[:, units : 2 * units])
        candidate = np.tanh(x[:, 2 * units :] + r * h[:, 2 * units :])
        state = z * state + (1 - z) * candidate
        correction = (state @ query_kernel + query_bias) @ embedding.T / np.sqrt(8)
        drawn[np.arange(batch), cell] = True
    return np.stack(log_probs, axis=1)


@pytest.mark.parametrize("replace", [True, False])
def test_sequence_log_probability_and_conditional_maps(rng, replace):
    sampler = _sampler(replace, rng)
    base = np.log(rng.dirichlet(np.ones(12), size=2)).reshape(2, 3, 4).astype("float32")
    images = rng.integers(0, 256, (2, 12, 16, 3)).astype("uint8")
    cells = np.array(
        [[5, 0, 5], [11, 3, 2]] if replace else [[5, 0, 7], [11, 3, 2]], "int32"
    )
    drawn = sampler.draw(base, images, _mean_colour, training=True, cells=cells)
    maps = ops.convert_to_numpy(drawn["step_log_attention"]).reshape(2, 3, -1)
    np.testing.assert_allclose(
        np.exp(maps).sum(-1), 1.0, rtol=1e-5
    )  # each a distribution
    np.testing.assert_allclose(
        maps[:, 0], base.reshape(2, -1), atol=1e-5
    )  # first: the base map
    if not replace:  # drawn cells excluded from the later maps
        assert np.exp(maps[0, 1, 5]) < 1e-12 and np.exp(maps[0, 2, 0]) < 1e-12
    features = ops.convert_to_numpy(drawn["features"])
    expected = _numpy_sequence_log_prob(sampler, base, cells, features, replace)
    np.testing.assert_allclose(
        ops.convert_to_numpy(drawn["draw_log_probs"]), expected, rtol=1e-4, atol=1e-4
    )
    np.testing.assert_array_equal(ops.convert_to_numpy(drawn["cells"]), cells)


def test_surrogate_gradient_is_the_analytic_score_function(rng):
    sampler = _sampler(False, rng)
    base = rng.normal(size=(2, 3, 4)).astype("float32")
    images = rng.integers(0, 256, (2, 12, 16, 3)).astype("uint8")
    cells = np.array([[5, 0, 7], [11, 3, 2]], "int32")

    def score(z):
        log_attention = (
            z - ops.logsumexp(ops.reshape(z, (2, -1)), axis=-1)[:, None, None]
        )
        drawn = sampler.draw(
            log_attention, images, _mean_colour, training=True, cells=cells
        )
        return ops.sum(drawn["draw_log_probs"], axis=-1)

    got = gradient(score, base).reshape(2, -1)
    # d/dz sum_n log p_n(s_n) = sum_n (e_{s_n} - p_n): the correction does not
    # depend on z, and the base's normalisation cancels inside each softmax.
    log_attention = base - np.log(np.exp(base).reshape(2, -1).sum(-1))[:, None, None]
    drawn = sampler.draw(
        log_attention, images, _mean_colour, training=True, cells=cells
    )
    maps = np.exp(ops.convert_to_numpy(drawn["step_log_attention"]).reshape(2, 3, -1))
    expected = (np.eye(12)[cells] - maps).sum(axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_sequence_head_layer(tmp_path, rng):
    features = rng.normal(size=(2, 4, 6)).astype("float32")
    positions = rng.random((2, 4, 2)).astype("float32")
    run_layer_test(
        kas.SequenceHead,
        {
            "units": 3,
            "dim": 8,
            "heads": 2,
            "blocks": 1,
            "mlp_dim": 16,
            "draw_order": True,
            "max_patches": 8,
            "shortcut": True,
            "shortcut_scale": 3.0,
            "activation": "softmax",
        },
        [features, positions],
        (2, 3),
        tmp_path,
        # project 2, 1 block (2 norms x 2, attention 8, MLP 4), final norm 2,
        # logits 2, pooled logits 2, class token and order embedding.
        expected_num_trainable_weights=26,
        expected_num_non_trainable_weights=0,
        output_dtypes=["float32"],
    )
    with pytest.raises(ValueError, match="SequenceHead .* expects features"):
        kas.SequenceHead(2)([features, positions[:, :3]])


def test_sequence_head_shortcut_is_a_linear_classifier_on_the_mean(rng):
    features = rng.normal(size=(2, 4, 6)).astype("float32")
    positions = rng.random((2, 4, 2)).astype("float32")
    head = kas.SequenceHead(3, dim=8, blocks=1, shortcut=True, activation=None)
    with_shortcut = ops.convert_to_numpy(head([features, positions]))
    kernel, bias = (ops.convert_to_numpy(w) for w in head.pooled_logits.weights)
    head.pooled_logits.kernel.assign(np.zeros_like(kernel))
    head.pooled_logits.bias.assign(np.zeros_like(bias))
    without = ops.convert_to_numpy(head([features, positions]))
    np.testing.assert_allclose(
        with_shortcut - without, features.mean(1) @ kernel + bias, rtol=1e-4, atol=1e-5
    )
    # With one feature per class it starts as the pool: softmax(3 mean f).
    logits = rng.normal(size=(2, 4, 3)).astype("float32")
    started = kas.SequenceHead(3, dim=8, blocks=1, shortcut=True)([logits, positions])
    pool = kas.WeightedLogitPool(3.0)([logits, np.full((2, 4), 0.25, "float32")])
    np.testing.assert_allclose(
        ops.convert_to_numpy(started), ops.convert_to_numpy(pool), rtol=1e-5, atol=1e-6
    )
    # A head saved before the shortcut existed has no "shortcut" key and no
    # weights for it: it must come back as it was.
    config = kas.SequenceHead(3, dim=8, blocks=1, shortcut=True).get_config()
    del config["shortcut"]
    assert not kas.SequenceHead.from_config(config).shortcut


def test_sequence_head_sees_a_set_unless_told_the_draw_order(rng):
    features = rng.normal(size=(2, 5, 6)).astype("float32")
    positions = rng.random((2, 5, 2)).astype("float32")
    shuffled = np.roll(np.arange(5), 2)  # every patch moves

    def change(head):
        out = head([features, positions])
        again = head([features[:, shuffled], positions[:, shuffled]])
        return np.abs(ops.convert_to_numpy(out) - ops.convert_to_numpy(again)).max()

    assert change(kas.SequenceHead(3, dim=8, blocks=1, draw_order=False)) < 1e-5
    ordered = kas.SequenceHead(3, dim=8, blocks=1, draw_order=True)
    ordered.build([features.shape, positions.shape])
    # A visible order embedding, as after training (it starts near zero).
    ordered.order.assign(rng.normal(size=ordered.order.shape).astype("float32"))
    assert change(ordered) > 1e-3


def _pairs_model(sampler, head, **settings):
    return kas.AttentionSamplingModel(
        2,
        feature_network=kas.NormalizedFeature(8),
        sampler=sampler,
        head=head,
        scale=8,
        **settings,
    )


def test_autoregressive_model_saves_explains_and_compiles(tmp_path):
    x, y, _ = kas.datasets.needle_pairs(8, seed=0)
    sampler = kas.AutoregressiveSampler(2, 16, seed=0, inference_sampling="top_k")
    model = _pairs_model(sampler, kas.SequenceHead(2, dim=16, blocks=1))
    assert {id(v) for v in sampler.trainable_variables} <= {
        id(v) for v in model.attention_variables()
    }  # the sampler's weights are the policy's: trained by REINFORCE
    model.compile(jit_compile=BACKEND != "torch", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    explanation = model.explain(x[:3])
    assert explanation["step_attention"].shape == (3, 2, 12, 12)
    np.testing.assert_allclose(
        explanation["step_attention"].sum((2, 3)), 1.0, rtol=1e-4
    )
    assert explanation["cells"].shape == (3, 2)
    path = os.path.join(tmp_path, "autoregressive.keras")
    model.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = keras.models.load_model(path)
    # The parts come back built; the model must build around them.
    assert not [w for w in caught if "build" in str(w.message)], caught
    assert isinstance(loaded.sampler, kas.AutoregressiveSampler)
    assert isinstance(loaded.head, kas.SequenceHead)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0)


def test_parts_own_their_settings():
    sampler = kas.AutoregressiveSampler(2, 16)
    with pytest.raises(ValueError, match="set n_patches on the sampler itself"):
        _pairs_model(sampler, None, n_patches=4)
    with pytest.raises(ValueError, match="set logit_scale on the head itself"):
        _pairs_model(None, kas.SequenceHead(2), logit_scale=5.0)
    with pytest.raises(ValueError, match="needs estimator='reinforce'"):
        _pairs_model(None, kas.SequenceHead(2), estimator="expectation")
    with pytest.raises(TypeError, match="use it as AttentionSamplingModel"):
        sampler([np.zeros((1, 2, 2), "float32"), np.zeros((1, 32, 32, 3), "float32")])
    with pytest.raises(ValueError, match="AutoregressiveSampler does not make"):
        _pairs_model(kas.AutoregressiveSampler(2, 16), None, estimator="expectation")
    # Left out, the estimator is the one these parts need.
    assert _pairs_model(kas.AutoregressiveSampler(2, 16), None).estimator == (
        "reinforce"
    )
    model = _pairs_model(sampler, kas.SequenceHead(2))
    assert model.n_patches == 2 and model.head is model.pool
    assert model.estimator == "reinforce"
    assert _pairs_model(None, None).estimator == "expectation"
