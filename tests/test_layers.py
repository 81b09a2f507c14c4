"""Shapes, dtypes, serialisation and errors of the four layers."""

import keras
import numpy as np
import pytest
from keras import ops
from layer_testing import gradient, run_layer_test

import keras_attention_sampling as kas


def test_attention_map(tmp_path, rng):
    images = rng.random((2, 6, 9, 3)).astype("float32")
    layer = run_layer_test(
        kas.AttentionMap,
        {
            "blocks": 2,
            "filters": 4,
            "kernel_size": 3,
            "activation": "relu",
            "temperature": 2.0,
            "batch_norm": True,
            "batch_norm_momentum": 0.8,
        },
        images,
        (2, 6, 9),
        tmp_path,
        # Two blocks of conv (kernel, bias) and batch norm (gamma, beta; mean,
        # variance), then the head (kernel, bias).
        expected_num_trainable_weights=10,
        expected_num_non_trainable_weights=4,
        output_dtypes=["float32"],  # the map stays float32
    )
    attention = ops.convert_to_numpy(layer(images))
    assert attention.dtype == np.float32
    np.testing.assert_allclose(attention.sum(axis=(1, 2)), 1.0, rtol=1e-5)


def test_attention_map_head_only_and_float32_under_mixed_precision(rng):
    images = rng.random((2, 5, 5, 4)).astype("float32")
    layer = kas.AttentionMap(blocks=0, dtype="mixed_bfloat16")
    attention = layer(images)
    assert len(layer.trainable_weights) == 2  # only the head
    assert keras.backend.standardize_dtype(attention.dtype) == "float32"
    np.testing.assert_allclose(
        ops.convert_to_numpy(attention).sum(axis=(1, 2)), 1.0, rtol=1e-5
    )


def test_attention_map_log_probs_exact_where_probabilities_underflow():
    layer = kas.AttentionMap(blocks=0, temperature=1.0)
    layer.build((1, 1, 2, 1))
    kernel = np.zeros((3, 3, 1, 1), "float32")
    kernel[1, 1, 0, 0] = 1.0
    layer.head.set_weights([kernel, np.zeros(1, "float32")])
    images = np.array([[[[0.0], [300.0]]]], "float32")
    log_probs = ops.convert_to_numpy(layer(images, return_log_probs=True))
    probabilities = ops.convert_to_numpy(layer(images))
    assert probabilities[0, 0, 0] == 0.0  # underflowed
    np.testing.assert_allclose(log_probs[0, 0], [-300.0, 0.0], atol=1e-4)


def test_patch_sampler(tmp_path, rng):
    attention = rng.dirichlet(np.ones(16), size=2).reshape(2, 4, 4).astype("float32")
    images = rng.random((2, 32, 40, 3)).astype("float32")
    run_layer_test(
        kas.PatchSampler,
        {
            "n_patches": 5,
            "patch_size": 8,
            "replace": False,
            "padding": "constant",
            "fill_value": 0.5,
            "inference_sampling": "top_k",
            "seed": 3,
        },
        [attention, images],
        [(2, 5, 8, 8, 3), (2, 5), (2, 5, 2)],
        tmp_path,
        trainable=False,
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
        output_dtypes=["compute", "float32", "float32"],
    )


def test_patch_sampler_outputs_are_consistent(rng):
    attention = rng.dirichlet(np.ones(20), size=3).reshape(3, 4, 5).astype("float32")
    images = rng.integers(0, 255, (3, 40, 50, 1)).astype("uint8")
    sampler = kas.PatchSampler(6, 10, seed=0)
    patches, sampled_attention, positions, cells = sampler(
        [attention, images], training=True, return_cells=True
    )
    patches = ops.convert_to_numpy(patches)
    positions = ops.convert_to_numpy(positions)
    assert patches.dtype == np.float32  # cast after the gather
    cells = ops.convert_to_numpy(cells)
    # The centres are those of the cells the sampler hands out.
    np.testing.assert_array_equal(
        positions[..., 0] // 10 * 5 + positions[..., 1] // 10, cells
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(sampled_attention),
        np.take_along_axis(attention.reshape(3, -1), cells, axis=1),
    )
    # Every centre is the middle of its cell.
    np.testing.assert_allclose(positions[..., 0] % 10, 5.0)
    np.testing.assert_allclose(positions[..., 1] % 10, 5.0)
    padded = np.pad(images, ((0, 0), (10, 10), (10, 10), (0, 0)), mode="reflect")
    for b in range(3):
        for n in range(6):
            top = int(positions[b, n, 0]) - 5 + 10
            left = int(positions[b, n, 1]) - 5 + 10
            np.testing.assert_array_equal(
                patches[b, n], padded[b, top : top + 10, left : left + 10]
            )


def test_patch_sampler_top_k_at_inference(rng):
    attention = rng.dirichlet(np.ones(16), size=2).reshape(2, 4, 4).astype("float32")
    images = rng.random((2, 16, 16, 3)).astype("float32")
    sampler = kas.PatchSampler(3, 4, inference_sampling="top_k")
    _, sampled, _ = sampler([attention, images], training=False)
    expected = -np.sort(-attention.reshape(2, -1), axis=1)[:, :3]
    np.testing.assert_allclose(ops.convert_to_numpy(sampled), expected)


def test_patch_sampler_seeded_draws_repeat(rng):
    attention = rng.dirichlet(np.ones(16), size=2).reshape(2, 4, 4).astype("float32")
    images = rng.random((2, 16, 16, 3)).astype("float32")
    first = kas.PatchSampler(8, 4, seed=11)([attention, images])[2]
    second = kas.PatchSampler(8, 4, seed=11)([attention, images])[2]
    np.testing.assert_array_equal(
        ops.convert_to_numpy(first), ops.convert_to_numpy(second)
    )


def test_normalized_feature(tmp_path, rng):
    patches = rng.random((2, 3, 8, 8, 3)).astype("float32")
    layer = run_layer_test(
        kas.NormalizedFeature,
        {"units": 4, "epsilon": 1e-9},
        patches,
        (2, 3, 4),
        tmp_path,
        expected_num_trainable_weights=10,  # 4 convolutions and the logits
        expected_num_non_trainable_weights=0,
        output_dtypes=["float32"],
    )
    norms = np.linalg.norm(ops.convert_to_numpy(layer(patches)), axis=-1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_normalized_feature_custom_backbone_round_trips(tmp_path, rng):
    backbone = keras.Sequential(
        [keras.layers.Conv2D(5, 3), keras.layers.GlobalAveragePooling2D()]
    )
    patches = rng.random((2, 3, 8, 8, 3)).astype("float32")
    run_layer_test(
        kas.NormalizedFeature,
        {"units": 2, "backbone": backbone},
        patches,
        (2, 3, 2),
        tmp_path,
        expected_num_trainable_weights=4,
    )


def test_normalized_feature_is_safe_at_zero_and_below_one_only_near_zero():
    # The documented norm r / sqrt(r**2 + epsilon): exactly the layer's
    # output for a Dense output of norm r, finite and zero at zero.
    layer = kas.NormalizedFeature(3, backbone=keras.layers.GlobalMaxPooling2D())
    layer.build((1, 5, 4, 4, 3))
    layer.dense.set_weights([np.eye(3, dtype="float32"), np.zeros(3, "float32")])
    radii = np.array([0.0, 1e-7, 1e-6, 1e-3, 1.0], "float32")
    direction = np.array([0.48, 0.6, 0.64], "float32")  # unit norm
    patches = np.broadcast_to(
        (radii[:, None] * direction)[None, :, None, None, :], (1, 5, 4, 4, 3)
    )
    out = ops.convert_to_numpy(layer(patches))
    assert np.all(np.isfinite(out))
    norms = np.linalg.norm(out[0], axis=-1)
    expected = radii / np.sqrt(radii.astype("float64") ** 2 + layer.epsilon)
    np.testing.assert_allclose(norms, expected, rtol=1e-4, atol=1e-7)
    assert norms[0] == 0.0 and abs(norms[3] - 1.0) < 1e-6


def test_normalized_feature_with_keras_applications_backbone(rng):
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3),
        include_top=False,
        pooling="max",
        weights=None,
        include_preprocessing=False,
        # Fewer kinds of layer to compile on first use: the same integration
        # in 23 s instead of 38 s on JAX (one 2-core suite run each).
        minimalistic=True,
    )
    layer = kas.NormalizedFeature(3, backbone=backbone)
    patches = keras.Input((2, 32, 32, 3))
    model = keras.Model(patches, layer(patches))
    assert tuple(model.output.shape) == (None, 2, 3)
    # Through predict, as a model runs it: one compiled program, where an
    # eager call on JAX compiles each of the backbone's operations apart
    # (the test took 22 s before and 14 s after, in two JAX suite runs).
    out = model.predict(rng.random((1, 2, 32, 32, 3)).astype("float32"), verbose=0)
    assert out.shape == (1, 2, 3)


def test_weighted_logit_pool(tmp_path, rng):
    features = rng.normal(size=(2, 4, 3)).astype("float32")
    attention = rng.random((2, 4)).astype("float32")
    run_layer_test(
        kas.WeightedLogitPool,
        {"logit_scale": 3.0, "activation": None, "attention_gradient": True},
        [features, attention],
        (2, 3),
        tmp_path,
        trainable=False,
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
        output_dtypes=["float32"],
    )
    pool = kas.WeightedLogitPool(logit_scale=3.0)
    got = ops.convert_to_numpy(pool([features, attention]))
    weights = attention / attention.sum(1, keepdims=True)
    logits = 3.0 * (weights[..., None] * features).sum(1)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_weighted_logit_pool_stops_attention_gradient_by_default(rng):
    features = rng.normal(size=(1, 3, 2)).astype("float32")
    attention = rng.random((1, 3)).astype("float32")
    for flag, expect_zero in ((False, True), (True, False)):
        pool = kas.WeightedLogitPool(attention_gradient=flag, activation=None)
        grad = gradient(lambda a, pool=pool: pool([features, a])[:, 0], attention)
        assert np.allclose(grad, 0) == expect_zero


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: kas.PatchSampler(2, 4)(
                [np.ones((2, 4), "float32"), np.ones((2, 8, 8, 3))]
            ),
            "rank 3",
        ),
        (
            lambda: kas.PatchSampler(2, 4)(
                [np.ones((2, 2, 2), "float32"), np.ones((2, 8, 8))]
            ),
            "rank 4",
        ),
        (
            lambda: kas.PatchSampler(2, 4)(
                [np.ones((3, 2, 2), "float32"), np.ones((2, 8, 8, 3))]
            ),
            "differs from the image batch",
        ),
        (
            lambda: kas.PatchSampler(2, 9)(
                [np.ones((2, 2, 2), "float32"), np.ones((2, 8, 8, 3))]
            ),
            "larger than the image",
        ),
        (
            lambda: kas.PatchSampler(5, 2, replace=False)(
                [np.ones((2, 2, 2), "float32"), np.ones((2, 8, 8, 3))]
            ),
            "without replacement",
        ),
        (lambda: kas.PatchSampler(0, 2), "must be positive"),
        (lambda: kas.PatchSampler(2, -1), "must be positive"),
        (lambda: kas.AttentionMap(filters=0), "must be positive"),
        (lambda: kas.AttentionMap()(np.ones((2, 8, 8), "float32")), "rank 4"),
        (lambda: kas.NormalizedFeature(0), "must be positive"),
        (
            lambda: kas.WeightedLogitPool()([np.ones((2, 3, 4)), np.ones((2, 5))]),
            "number of patches",
        ),
        (
            lambda: kas.WeightedLogitPool()([np.ones((2, 3, 4)), np.ones((3, 3))]),
            "batch",
        ),
        (
            lambda: kas.AttentionSamplingModel(3)(np.ones((1, 20, 20), "float32")),
            "rank 4",
        ),
    ],
)
def test_bad_input_gets_a_clear_error(build, message):
    with pytest.raises(ValueError, match=message) as info:
        build()
    assert any(
        name in str(info.value)
        for name in (
            "PatchSampler",
            "AttentionMap",
            "NormalizedFeature",
            "WeightedLogitPool",
            "AttentionSamplingModel",
        )
    )


def test_reward_baselines():
    rewards = np.array([0.2, 0.6, 0.1, 0.5], "float32")
    loo = kas.RewardBaseline("leave_one_out")(rewards, samples_per_image=2)
    np.testing.assert_allclose(
        ops.convert_to_numpy(loo), [0.6, 0.2, 0.5, 0.1], rtol=1e-6
    )
    mean = kas.RewardBaseline("mean")(rewards)
    np.testing.assert_allclose(float(ops.convert_to_numpy(mean)), 0.35, rtol=1e-6)
    moving = kas.RewardBaseline("moving_average", momentum=0.5)
    first = float(ops.convert_to_numpy(moving(rewards, training=True)))
    second = float(ops.convert_to_numpy(moving(rewards * 3, training=True)))
    # The first call has no history (batch mean); the second sees the
    # bias-corrected average of the first batch only.
    np.testing.assert_allclose([first, second], [0.35, 0.35], rtol=1e-5)
    third = float(ops.convert_to_numpy(moving(rewards, training=False)))
    np.testing.assert_allclose(third, (0.25 * 0.35 + 0.5 * 1.05) / 0.75, rtol=1e-5)
    with pytest.raises(ValueError, match="RewardBaseline"):
        kas.RewardBaseline("median")


def test_downsample(tmp_path, rng):
    images = rng.integers(0, 256, (2, 13, 17, 3)).astype("uint8")
    layer = run_layer_test(
        kas.Downsample,
        {"scale": 4, "rescale": 1 / 255},
        images,
        (2, 3, 4, 3),
        tmp_path,
        trainable=False,
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
        output_dtypes=["compute"],
    )
    expected = images[:, :12, :16].reshape(2, 3, 4, 4, 4, 3).mean(axis=(2, 4)) / 255
    np.testing.assert_allclose(ops.convert_to_numpy(layer(images)), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="Downsample: scale"):
        kas.Downsample(0)


def test_the_pools_old_temperature_keyword_still_works():
    with pytest.warns(DeprecationWarning, match="now called `logit_scale`"):
        pool = kas.WeightedLogitPool(temperature=2.0)
    assert pool.logit_scale == 2.0 and "temperature" not in pool.get_config()
    with pytest.warns(DeprecationWarning, match="now called `logit_scale`"):
        model = kas.AttentionSamplingModel(3, temperature=4.0)
    assert model.logit_scale == 4.0 == model.pool.logit_scale
    with pytest.raises(ValueError, match="logit_scale must be positive"):
        model.logit_scale = 0.0
    for pool in (kas.WeightedLogitPool, kas.ExpectationPool):
        with pytest.raises(ValueError, match=f"{pool.__name__}: logit_scale must be"):
            pool(logit_scale=-1.0)


def test_default_logit_scale_caps_the_confidence_at_0_995():
    for classes in (2, 3, 4, 10, 100, 1000):
        scale = kas.default_logit_scale(classes)
        # The most confident unit vector for class 0 leads every other class
        # equally; no other unit vector does better.
        best = np.full(classes, -1.0 / classes)
        best[0] += 1.0
        best /= np.linalg.norm(best)
        assert np.isclose(_softmax(scale * best)[0], 0.995, atol=1e-9)
        others = np.random.default_rng(classes).normal(size=(2000, classes))
        others[:, 0] += 3.0
        others /= np.linalg.norm(others, axis=1, keepdims=True)
        assert _softmax(scale * others)[:, 0].max() < 0.995
    # One class is always predicted with certainty; the scale stays positive.
    assert kas.default_logit_scale(1) == 3.0
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="default_logit_scale: num_classes"):
            kas.default_logit_scale(bad)


def test_model_logit_scale_default_follows_the_classes_and_saves_its_value():
    model = kas.AttentionSamplingModel(10)
    assert model.logit_scale == kas.default_logit_scale(10) == model.pool.logit_scale
    assert kas.AttentionSamplingModel(3).logit_scale == kas.default_logit_scale(3)
    assert kas.AttentionSamplingModel(10, logit_scale=3.0).logit_scale == 3.0
    # The value, not `None`, is saved: a model saved under an earlier rule
    # (3 for every number of classes until 2026-12-04, a cap of 0.95 until
    # 2026-12-07) loads with its scale, and one saved now keeps its scale if
    # the rule changes again.
    config = model.get_config()
    assert config["logit_scale"] == kas.default_logit_scale(10)
    config["logit_scale"] = 3.0
    assert kas.AttentionSamplingModel.from_config(config).logit_scale == 3.0
    reinforce = kas.AttentionSamplingModel(10, estimator="reinforce")
    assert reinforce.pool.logit_scale == kas.default_logit_scale(10)


def _softmax(logits):
    logits = logits - logits.max(axis=-1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)


def test_attention_map_uniform_mixing_is_the_exact_mixture(tmp_path, rng):
    images = rng.random((2, 3, 4, 2)).astype("float32") * 100
    plain = kas.AttentionMap(blocks=0, temperature=0.1)
    mixed = kas.AttentionMap(blocks=0, temperature=0.1, uniform_mixing=0.2)
    plain.build(images.shape)
    mixed.build(images.shape)
    mixed.set_weights(plain.get_weights())
    a = ops.convert_to_numpy(plain(images))
    log_q = ops.convert_to_numpy(mixed(images, return_log_probs=True))
    np.testing.assert_allclose(np.exp(log_q), 0.8 * a + 0.2 / 12, rtol=1e-5)
    assert np.exp(log_q).min() >= 0.2 / 12 * (1 - 1e-5)
    np.testing.assert_allclose(np.exp(log_q).sum(axis=(1, 2)), 1.0, rtol=1e-5)
    run_layer_test(
        kas.AttentionMap,
        {"blocks": 1, "filters": 2, "uniform_mixing": 0.1, "head_initializer": "zeros"},
        images,
        (2, 3, 4),
        tmp_path,
        output_dtypes=["float32"],
    )
    with pytest.raises(ValueError, match="uniform_mixing must be in"):
        kas.AttentionMap(uniform_mixing=1.0)
