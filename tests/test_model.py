"""AttentionSamplingModel and PolicyGradientModel: training, routing, saving."""

import os

import keras
import numpy as np
import pytest
from keras import ops
from layer_testing import without_build_config

import keras_attention_sampling as kas
from keras_attention_sampling import policy_gradient, sampling

BACKEND = keras.backend.backend()


def small_model(**kwargs):
    settings = dict(
        num_classes=3,
        scale=4,
        n_patches=3,
        patch_size=8,
        samples_per_image=2,
        attention_network=kas.AttentionMap(blocks=1, filters=4),
        feature_network=kas.NormalizedFeature(
            3,
            backbone=keras.Sequential(
                [
                    keras.layers.Conv2D(4, 3, activation="relu"),
                    keras.layers.GlobalMaxPooling2D(),
                ]
            ),
        ),
        seed=0,
    )
    settings.update(kwargs)
    return kas.AttentionSamplingModel(**settings)


@pytest.fixture
def data(rng):
    x = rng.random((8, 32, 32, 3)).astype("float32")
    y = np.arange(8) % 3
    return x, y


def snapshot(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def moved(before, variables, atol=1e-8):
    return [
        not np.allclose(b, keras.ops.convert_to_numpy(v), atol=atol)
        for b, v in zip(before, variables)
    ]


def test_fit_evaluate_predict_and_logs(data):
    x, y = data
    model = small_model()
    model.compile(metrics=["accuracy"])
    history = model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), verbose=0)
    for key in (
        "loss",
        "accuracy",
        "entropy",
        "reward",
        "val_loss",
        "val_entropy",
        "val_reward",
    ):
        assert key in history.history
        assert np.all(np.isfinite(history.history[key]))
    # The map has 8x8 cells: the entropy is a real entropy, not a placeholder.
    assert 0.0 < history.history["entropy"][-1] <= np.log(64) + 1e-4
    assert 0.0 < history.history["reward"][-1] <= 1.0
    results = model.evaluate(x, y, verbose=0, return_dict=True)
    assert set(results) >= {"loss", "accuracy", "entropy", "reward"}
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (8, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)


def test_each_variable_is_updated_by_its_own_optimizer(data):
    x, y = data
    model = small_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        attention_optimizer=keras.optimizers.SGD(0.0),
    )
    model.fit(x[:4], y[:4], epochs=1, verbose=0)
    attention_ids = {id(v) for v in model.attention_network.trainable_variables}
    routed = {id(v) for v in model.attention_optimizer._trainable_variables}
    assert routed == attention_ids
    feature_ids = {id(v) for v in model.feature_optimizer._trainable_variables}
    assert feature_ids == {id(v) for v in model.trainable_variables} - attention_ids
    assert int(model.attention_optimizer.iterations) == 1
    assert int(model.feature_optimizer.iterations) == 1

    # Behaviour: a zero learning rate freezes exactly the routed variables.
    attention_before = snapshot(model.attention_network.trainable_variables)
    feature_before = snapshot(model.feature_network.trainable_variables)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert not any(moved(attention_before, model.attention_network.trainable_variables))
    assert any(moved(feature_before, model.feature_network.trainable_variables))

    model = small_model()
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        attention_optimizer=keras.optimizers.Adam(1e-2),
    )
    model.build(x.shape)
    attention_before = snapshot(model.attention_network.trainable_variables)
    feature_before = snapshot(model.feature_network.trainable_variables)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert any(moved(attention_before, model.attention_network.trainable_variables))
    assert not any(moved(feature_before, model.feature_network.trainable_variables))


def test_default_optimizers_and_the_reference_settings(data):
    model = small_model()
    model.compile()
    assert model.estimator == "expectation"
    assert isinstance(model.pool, kas.ExpectationPool)
    assert model.attention_optimizer.beta_1 == pytest.approx(0.9)
    assert float(model.attention_optimizer.learning_rate) == pytest.approx(1e-3)
    assert model.feature_optimizer.beta_1 == pytest.approx(0.9)
    assert model.attention_optimizer is not model.feature_optimizer
    reference = kas.reference_settings()
    model = small_model(**reference["model"])
    model.compile(**reference["compile"])
    assert model.estimator == "reinforce"
    assert isinstance(model.pool, kas.WeightedLogitPool)
    assert (model.rescale, model.offset) == (pytest.approx(1 / 255), 0.0)
    assert model.attention_optimizer.beta_1 == pytest.approx(0.999)
    # The notebook's logit scale, whatever the number of classes.
    assert kas.AttentionSamplingModel(10, **reference["model"]).logit_scale == 3.0
    # Fresh optimisers each call: two models never share optimiser state.
    assert (
        reference["compile"]["optimizer"]
        is not (kas.reference_settings()["compile"]["optimizer"])
    )


def test_save_load_gives_identical_top_k_predictions_and_resumes(tmp_path, data):
    x, y = data
    model = small_model(inference_sampling="top_k", baseline="moving_average")
    model.compile(metrics=["accuracy"])
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, kas.AttentionSamplingModel)
    # Every part comes back built, as it was after fit: with one unbuilt
    # layer Keras' JAX `predict` runs the whole model eagerly on each call to
    # build it.
    for trained in (model, loaded):
        assert not [x.name for x in trained._flatten_layers() if not x.built]
    assert without_build_config(loaded.get_config()) == without_build_config(
        model.get_config()
    )
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    # Both optimisers' state and the moving baseline survive.
    assert int(loaded.attention_optimizer.iterations) == 2
    assert int(loaded.feature_optimizer.iterations) == 2
    for original, restored in zip(
        model.optimizer.variables, loaded.optimizer.variables
    ):
        np.testing.assert_allclose(
            ops.convert_to_numpy(original), ops.convert_to_numpy(restored)
        )
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded.reward_baseline.moving_reward),
        ops.convert_to_numpy(model.reward_baseline.moving_reward),
    )
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert int(loaded.attention_optimizer.iterations) == 4


def test_explain_returns_every_piece(data):
    x, _ = data
    model = small_model(inference_sampling="top_k")
    explanation = model.explain(x[:3], batch_size=2)
    assert explanation["probabilities"].shape == (3, 3)
    assert explanation["attention"].shape == (3, 8, 8)
    np.testing.assert_allclose(explanation["attention"].sum((1, 2)), 1.0, rtol=1e-5)
    assert explanation["positions"].shape == (3, 3, 2)
    assert explanation["sampled_attention"].shape == (3, 3)
    assert explanation["patch_logits"].shape == (3, 3, 3)
    assert explanation["patches"].shape == (3, 3, 8, 8, 3)
    # The pooled prediction is rebuilt exactly from the parts it returns.
    weights = explanation["sampled_attention"] / explanation["sampled_attention"].sum(
        1, keepdims=True
    )
    pooled = (weights[..., None] * explanation["patch_logits"]).sum(1)
    logits = model.logit_scale * pooled
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(
        explanation["probabilities"], expected, rtol=1e-4, atol=1e-6
    )


def test_explain_draws_as_an_eager_run_draws(data):
    # On JAX explain runs one compiled program (eager JAX compiles every
    # operation apart); compiled or eager, the same model state gives the
    # same draws and leaves the seed where the other leaves it.
    x, _ = data
    models = [small_model(), small_model()]
    models[0].compile()
    models[1].compile(run_eagerly=True)
    for model in models:
        model.build(x.shape)
    models[1].set_weights(models[0].get_weights())
    first, second = ([m.explain(x[:4], batch_size=2) for m in models] for _ in "12")
    for compiled, eager in (first, second):
        np.testing.assert_array_equal(compiled["cells"], eager["cells"])
        for key in ("probabilities", "attention", "patch_logits"):
            np.testing.assert_allclose(
                compiled[key], eager[key], rtol=1e-4, atol=1e-6, err_msg=key
            )
    assert not np.array_equal(first[0]["cells"], second[0]["cells"])  # it drew again


def test_uint8_images_with_rescale(rng):
    x = rng.integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    model = small_model(rescale=1 / 255, offset=0.0)
    model.compile()
    history = model.fit(x, np.arange(4) % 3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    explanation = model.explain(x[:1])
    raw = explanation["patches"]
    assert raw.dtype == np.uint8  # as cut from the images
    patches = ops.convert_to_numpy(model.rescaling(raw))  # what the features see
    assert 0.0 <= patches.min() and patches.max() <= 1.0


def test_view_made_outside_the_model_gives_the_same_predictions(tmp_path, rng):
    x = rng.integers(0, 256, (6, 32, 32, 3)).astype("uint8")
    y = np.arange(6) % 3
    model = small_model(rescale=1 / 255, inference_sampling="top_k")
    inputs = {
        "images": x,
        "view": ops.convert_to_numpy(kas.Downsample(4)(x)).astype("float32"),
    }
    model.compile(metrics=["accuracy"])
    # Either form builds the model; the two give the same top-k prediction.
    np.testing.assert_allclose(
        model.predict(inputs, verbose=0),
        model.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    history = model.fit(inputs, y, batch_size=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    explanation = model.explain(inputs, batch_size=4)
    assert explanation["attention"].shape == (6, 8, 8)
    path = os.path.join(tmp_path, "views.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(inputs, verbose=0),
        model.predict(inputs, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_host_view_matches_the_model_view(rng):
    x = rng.integers(0, 256, (2, 33, 30, 3)).astype("uint8")
    downsample = kas.Downsample(4)
    host = downsample.host_view(x)
    assert host.dtype == np.uint8 and host.shape == (2, 8, 7, 3)
    model_view = ops.convert_to_numpy(downsample(x))
    assert np.abs(host.astype("float32") - model_view).max() <= 0.5
    assert kas.datasets.with_views(x, 4)["view"].shape == (2, 8, 7, 3)
    with pytest.raises(ValueError, match="Downsample.host_view: images must be uint8"):
        downsample.host_view(x.astype("float32"))
    with pytest.raises(ValueError, match="smaller than the scale"):
        kas.Downsample(40).host_view(x)


def test_dict_inputs_need_images_and_view(data):
    x, _ = data
    with pytest.raises(ValueError, match="keys 'images' and 'view'"):
        small_model()({"images": x, "low": x[:, ::4, ::4]})


@pytest.mark.parametrize("replace", [True, False])
@pytest.mark.parametrize(
    "reward,baseline", [("negative_loss", "none"), ("bounded", "moving_average")]
)
def test_estimator_variants_train(data, replace, reward, baseline):
    x, y = data
    model = small_model(
        replace=replace, reward=reward, baseline=baseline, estimator="reinforce"
    )
    model.compile()
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    if baseline == "moving_average":
        assert float(ops.convert_to_numpy(model.reward_baseline.updates)) == 2.0


def test_mixed_precision_training(data):
    if BACKEND == "torch":
        pytest.skip(
            "torch 2.13 on CPU cannot backpropagate bfloat16 convolutions "
            "(slow_conv2d: grad_weight must be contiguous)"
        )
    x, y = data
    model = small_model(
        dtype="mixed_bfloat16",
        attention_network=kas.AttentionMap(blocks=1, filters=4, dtype="mixed_bfloat16"),
        feature_network=kas.NormalizedFeature(3, dtype="mixed_bfloat16"),
    )
    model.compile()
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert (
        keras.backend.standardize_dtype(model.predict(x, verbose=0).dtype) == "float32"
    )


def functional_model(**kwargs):
    images = keras.Input((32, 32, 3))
    low = keras.layers.AveragePooling2D(4)(images)
    attention = kas.AttentionMap(blocks=1, filters=4, name="my_attention")(low)
    patches, weights, _ = kas.PatchSampler(3, 8, seed=0, inference_sampling="top_k")(
        [attention, images]
    )
    features = kas.NormalizedFeature(3)(patches)
    outputs = kas.WeightedLogitPool(3.0)([features, weights])
    return kas.PolicyGradientModel(images, outputs, samples_per_image=2, **kwargs)


def test_functional_model_trains_with_the_policy_gradient(tmp_path, data):
    x, y = data
    model = functional_model(entropy_weight=0.1)
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        attention_optimizer=keras.optimizers.Adam(1e-2),
        metrics=["accuracy"],
    )
    attention_layer = model.get_layer("my_attention")
    routed = {id(v) for v in model.attention_variables()}
    assert routed == {id(v) for v in attention_layer.trainable_variables}
    before = snapshot(attention_layer.trainable_variables)
    others = [v for v in model.trainable_variables if id(v) not in routed]
    others_before = snapshot(others)
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "entropy", "reward"}
    assert any(moved(before, attention_layer.trainable_variables))
    assert not any(moved(others_before, others))

    path = os.path.join(tmp_path, "functional.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, kas.PolicyGradientModel)
    assert loaded.entropy_weight == 0.1 and loaded.samples_per_image == 2
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    assert int(loaded.attention_optimizer.iterations) == 2
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0)


def test_functional_model_needs_one_sampler():
    images = keras.Input((8,))
    with pytest.raises(ValueError, match="exactly one PatchSampler"):
        kas.PolicyGradientModel(images, keras.layers.Dense(2)(images))


def _gradient(function, value):
    """d sum(function(value)) / d value, with the backend's own autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        value = tf.Variable(value)
        with tf.GradientTape() as tape:
            out = tf.reduce_sum(function(value))
        return tape.gradient(out, value).numpy()
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: function(v).sum())(value))
    import torch

    value = torch.tensor(value, requires_grad=True)
    function(value).sum().backward()
    return value.grad.numpy()


@pytest.mark.parametrize("replace", [True, False])
def test_surrogate_gradient_is_the_score_function_estimate(rng, replace):
    logits = rng.normal(size=(2, 3, 4)).astype("float32")
    cells = np.array([[5, 0, 11], [7, 3, 2]], "int32")
    rewards = np.array([0.8, 0.3], "float32")
    baseline, entropy_weight = 0.5, 0.05

    def surrogate(z):
        log_probs = sampling.log_softmax_2d(z)
        flat = ops.reshape(log_probs, (2, -1))
        draws = sampling.draw_log_prob(flat, cells, replace=replace)
        return policy_gradient.policy_surrogate(
            draws, rewards, baseline, log_probs, entropy_weight
        )

    got = _gradient(surrogate, logits).reshape(2, -1)

    z = logits.reshape(2, -1).astype("float64")
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = np.zeros_like(z)
    for b in range(2):
        # Score of the draw: d log P(s_1..s_N) / dz.
        score = np.zeros(12)
        used = np.zeros(12)
        for cell in cells[b]:
            onehot = np.eye(12)[cell]
            score += onehot - p[b]
            if not replace and used.any():
                # d/dz -log(1 - sum_used p) = sum_used p (onehot - p) / (1 - sum_used p)
                mass = (p[b] * used).sum()
                score += (p[b] * used - mass * p[b]) / (1 - mass)
            used += onehot
        neg_entropy_grad = p[b] * (np.log(p[b]) - (p[b] * np.log(p[b])).sum())
        expected[b] = (
            -(rewards[b] - baseline) * score + entropy_weight * neg_entropy_grad
        )
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_each_setting_has_one_owner(tmp_path, data):
    x, y = data
    model = small_model(baseline="moving_average")
    # The model's attributes are its layers' settings, read and written there.
    owners = {
        "scale": (model.downsample, "scale"),
        "n_patches": (model.sampler, "n_patches"),
        "replace": (model.sampler, "replace"),
        "inference_sampling": (model.sampler, "inference_sampling"),
        "logit_scale": (model.pool, "logit_scale"),
        "rescale": (model.rescaling, "scale"),
        "baseline": (model.reward_baseline, "mode"),
    }
    for name, (layer, attribute) in owners.items():
        assert getattr(model, name) == getattr(layer, attribute), name
    model.replace = False
    assert model.sampler.replace is False
    model.baseline = "leave_one_out"
    assert model.reward_baseline.mode == "leave_one_out"
    assert model.get_config()["baseline"] == "leave_one_out"
    with pytest.raises(ValueError, match="PatchSampler: inference_sampling"):
        model.inference_sampling = "argmax"
    with pytest.raises(ValueError, match="RewardBaseline: mode"):
        model.baseline = "median"
    with pytest.raises(AttributeError, match="fixed at construction"):
        model.seed = 3
    # The policy gradient uses the log-probability of the sampler's own scheme.
    log_probs = np.log(np.full((1, 4, 4), 1 / 16, "float32"))
    cells = np.array([[0, 1]], "int32")
    without = ops.convert_to_numpy(model.sampler.draw_log_prob(log_probs, cells))
    np.testing.assert_allclose(without, [[np.log(1 / 16), np.log(1 / 15)]], rtol=1e-5)


def test_inference_sampling_written_on_a_loaded_model_takes_effect(tmp_path, data):
    x, y = data
    model = small_model()
    model.compile()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    # Sampled predictions differ from call to call...
    first, second = (loaded.predict(x, verbose=0) for _ in range(2))
    assert not np.allclose(first, second)
    # ...until the setting is written through the model, with no rebuild,
    # even though predict has already been compiled.
    loaded.inference_sampling = "top_k"
    first, second = (loaded.predict(x, verbose=0) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    assert loaded.explain(x[:2])["positions"].shape == (2, 3, 2)
    loaded.n_patches = 5
    assert loaded.explain(x[:2])["positions"].shape == (2, 5, 2)


def test_expectation_estimator_trains_the_attention_through_the_pool(tmp_path, data):
    x, y = data
    model = small_model(estimator="expectation", entropy_weight=0.0, replace=False)
    assert isinstance(model.pool, kas.ExpectationPool) and model.attention_gradient
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        attention_optimizer=keras.optimizers.SGD(0.5),
        metrics=["accuracy"],
    )
    model.build(x.shape)
    before = snapshot(model.attention_network.trainable_variables)
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # No surrogate and no entropy term: only the pool's gradient moved them.
    assert any(moved(before, model.attention_network.trainable_variables))
    path = os.path.join(tmp_path, "expectation.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.estimator == "expectation" and isinstance(
        loaded.pool, kas.ExpectationPool
    )
    loaded.inference_sampling = model.inference_sampling = "top_k"
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(AttributeError, match="fixed with estimator='expectation'"):
        model.attention_gradient = False
    with pytest.raises(ValueError, match="estimator must be one of"):
        small_model(estimator="gumbel")


def test_functional_expectation_estimator_and_its_checks(data):
    x, y = data
    images = keras.Input((32, 32, 3))
    attention = kas.AttentionMap(blocks=1, filters=4)(kas.Downsample(4)(images))
    patches, weights, _ = kas.PatchSampler(3, 8, replace=False, seed=0)(
        [attention, images]
    )
    features = kas.NormalizedFeature(3)(patches)
    outputs = kas.ExpectationPool(replace=False, logit_scale=3.0, activation="softmax")(
        [features, weights]
    )
    model = kas.PolicyGradientModel(images, outputs, estimator="expectation")
    model.compile(metrics=["accuracy"])
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # Left out, the estimator is the graph's: its pool is an ExpectationPool.
    assert kas.PolicyGradientModel(images, outputs).estimator == "expectation"
    with pytest.raises(ValueError, match="use estimator='expectation'"):
        kas.PolicyGradientModel(images, outputs, estimator="reinforce")
    wrong = kas.ExpectationPool(replace=True)([features, weights])
    with pytest.raises(ValueError, match="give both the same"):
        kas.PolicyGradientModel(images, wrong, estimator="expectation")


def test_default_entropy_weight_is_the_estimators():
    # Left at None, the entropy weight follows the estimator once the model
    # knows it: none for the expectation estimator, 0.01 for REINFORCE.
    assert small_model().estimator == "expectation"
    assert small_model().entropy_weight == 0.0
    assert small_model(estimator="reinforce").entropy_weight == 0.01
    autoregressive = kas.AttentionSamplingModel(
        3, sampler=kas.AutoregressiveSampler(3, 8), scale=4
    )
    assert autoregressive.entropy_weight == 0.01  # it needs REINFORCE
    assert functional_model().estimator == "reinforce"
    assert functional_model().entropy_weight == 0.01
    assert small_model(entropy_weight=0.2).entropy_weight == 0.2  # given, kept
    model = small_model(estimator="reinforce", entropy_weight=0.2)
    model.entropy_weight = None
    assert model.entropy_weight == 0.01
    # The reference notebook's settings keep its own weight.
    reference = kas.reference_settings()["model"]
    assert small_model(**reference).entropy_weight == 0.05
    # The config holds the number, so a model saved with an old default
    # (0.05 for every estimator until 2026-12-02, for REINFORCE until
    # 2026-12-07) loads with it.
    for estimator, saved in (("expectation", 0.0), ("reinforce", 0.01)):
        config = small_model(estimator=estimator).get_config()
        assert config["entropy_weight"] == saved
        config["entropy_weight"] = 0.05
        loaded = kas.AttentionSamplingModel.from_config(config)
        assert loaded.entropy_weight == 0.05


def test_entropy_weight_schedule_is_read_at_each_step(tmp_path, rng):
    # Two copies of one image, every cell drawn: all draws predict alike, the
    # batch-mean baseline equals every reward, so the REINFORCE term is zero
    # and only the entropy term can move the attention.
    x = np.repeat(rng.integers(0, 256, (1, 32, 32, 3)).astype("uint8"), 2, axis=0)
    y = np.array([1, 1])
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.0, 100.0])
    model = small_model(
        samples_per_image=1,
        n_patches=64,
        replace=False,
        entropy_weight=schedule,
        estimator="reinforce",
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        attention_optimizer=keras.optimizers.SGD(0.1),
    )
    model.build(x.shape)
    before = snapshot(model.attention_network.trainable_variables)
    model.fit(x, y, epochs=1, verbose=0)  # step 0: weight 0
    # Rewards and baseline agree only to float32 rounding, which moved a
    # bias by 1.6e-8 on JAX; a step of the entropy term moves it by far more.
    variables = model.attention_network.trainable_variables
    assert not any(moved(before, variables, atol=1e-6))
    model.fit(x, y, epochs=1, verbose=0)  # step 1: weight 100, same compiled step
    assert any(moved(before, variables, atol=1e-3))
    assert float(ops.convert_to_numpy(model.entropy_weight_now())) == 100.0
    path = os.path.join(tmp_path, "schedule.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(
        loaded.entropy_weight, keras.optimizers.schedules.PiecewiseConstantDecay
    )
