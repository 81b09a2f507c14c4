"""The method learns where to look, on every seed, with the package defaults.

The task is `kas.datasets.textured_needles`: 96x96 `uint8` noise with one
12x12 needle whose texture (horizontal stripes, vertical stripes or a
checkerboard) is the class, every class with the same mean. The view
(scale 8, a 12x12 map) shows where the needle is but not what it is, and the
model sees only 2 patches of 16x16, so it must learn where to look. Only the
task's geometry is given; everything else is the package's defaults.
"""

import keras
import numpy as np
import pytest

import keras_attention_sampling as kas

GEOMETRY = {"scale": 8, "n_patches": 2, "patch_size": 16}
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def task():
    train = kas.datasets.textured_needles(1024, seed=100)
    test = kas.datasets.textured_needles(300, seed=200)
    return train, test


def train(task, seed, epochs=4, attention_network=None, frozen=False, **settings):
    (x, y, _), _ = task
    keras.utils.set_random_seed(seed)
    model = kas.AttentionSamplingModel(
        3, attention_network=attention_network, seed=seed, **GEOMETRY, **settings
    )
    if frozen:
        model.attention_network.trainable = False
    model.compile(metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)
    return model


def accuracy(model, task):
    _, (x, y, _) = task
    return float(np.mean(model.predict(x, batch_size=50, verbose=0).argmax(-1) == y))


def attention_on_needles(attention, corners, needle=12, size=96):
    """Mean attention mass of the cells whose patch would overlap the needle."""
    cells = attention.shape[1]
    centres = (np.arange(cells) + 0.5) * size / cells
    masses = []
    for a, (top, left) in zip(attention, corners):
        rows = (centres > top - 8) & (centres < top + needle + 8)
        cols = (centres > left - 8) & (centres < left + needle + 8)
        masses.append(a[np.ix_(rows, cols)].sum())
    return float(np.mean(masses))


@pytest.fixture(scope="module")
def learned(task):
    return {seed: train(task, seed) for seed in SEEDS}


def test_every_seed_learns_with_the_defaults_and_beats_uniform_sampling(task, learned):
    accuracies = {seed: accuracy(model, task) for seed, model in learned.items()}
    # A frozen zero head samples uniformly: the same model without learning
    # where to look.
    uniform = train(
        task,
        0,
        attention_network=kas.AttentionMap(head_initializer="zeros"),
        frozen=True,
    )
    floor = accuracy(uniform, task)
    print(f"learned {accuracies}, uniform sampling {floor:.3f}")
    assert all(value > 0.85 for value in accuracies.values()), accuracies
    assert min(accuracies.values()) > floor + 0.3


def test_inference_mode_attention_is_as_good_as_training_mode(task, learned):
    _, (x, y, corners) = task
    model = learned[0]
    # predict: batch normalisation on its moving statistics.
    inference = model.explain(x[:100])["attention"]
    # Training mode: the batch's own statistics, the attention training saw.
    # Only the map, which `policy_forward` computes the same way; on JAX an
    # eager pass of the whole model compiles every operation apart.
    view = model.downsample(x[:100])
    training = np.exp(
        keras.ops.convert_to_numpy(model.attention_log_probs(view, training=True))
    )
    on_inference = attention_on_needles(inference, corners[:100])
    on_training = attention_on_needles(training, corners[:100])
    print(
        f"attention on the needle: inference {on_inference:.2f}, training {on_training:.2f}"
    )
    assert on_inference > 0.5 and on_inference > on_training - 0.1


def test_reinforce_learns_too(task):
    # The defaults train through the expectation estimator; the reference
    # notebook's REINFORCE, with the package's other defaults, must learn too.
    model = train(task, 0, estimator="reinforce")
    value = accuracy(model, task)
    print(f"REINFORCE: {value:.3f}")
    assert model.estimator == "reinforce" and value > 0.85


def test_autoregressive_draws_find_the_second_needle(learned):
    # The same/different task: two needles far apart, the class is whether
    # their stripes agree, so no single patch can tell. The models start from
    # the single-needle model's attention network (kept fixed: it finds
    # needles) and patch backbone (it knows textures). With 2 independent
    # draws from that map a pair often shows one needle twice; the
    # autoregressive sampler learns to look for the other one.
    x, y, _ = kas.datasets.needle_pairs(1024, seed=1)
    x_test, y_test, corners = kas.datasets.needle_pairs(300, seed=2)
    source = learned[0]

    def model_drawing_with(sampler_class):
        keras.utils.set_random_seed(0)
        model = kas.AttentionSamplingModel(
            2,
            feature_network=kas.NormalizedFeature(8),
            sampler=sampler_class(2, 16, replace=False, seed=0),
            head=kas.SequenceHead(2, dim=16, blocks=1),
            scale=8,
        )
        model.build((None, 96, 96, 3))
        model.attention_network.set_weights(source.attention_network.get_weights())
        backbone = source.feature_network.patch_backbone.get_weights()
        model.feature_network.patch_backbone.set_weights(backbone)
        model.attention_network.trainable = False
        return model

    def touched(model):
        """Share of test pairs whose draws overlap both needles, and the
        model's predictions."""
        explanation = model.explain(x_test, batch_size=50)
        centres = corners + 6  # (B, 2 needles, 2)
        positions = explanation["positions"]
        near = np.abs(positions[:, :, None] - centres[:, None]) < 14  # overlap
        rate = near.all(axis=-1).any(axis=1).all(axis=-1).mean()
        return float(rate), explanation["probabilities"].argmax(-1)

    # Independent draws have nothing to learn here: the map is fixed, so
    # where they land does not depend on training, and an untrained model
    # measures it. Only the autoregressive draws are trained. Their training
    # accuracy passed 0.9 at epoch 4 (TF, JAX) and 7 (torch), and reached
    # 0.99 by epoch 10 (TF, JAX) and 12 (torch) on an Intel Xeon: 12 epochs.
    independent, _ = touched(model_drawing_with(kas.PatchSampler))
    model = model_drawing_with(kas.AutoregressiveSampler)
    model.compile(metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=12, verbose=0)
    autoregressive, predictions = touched(model)
    accuracy = float(np.mean(predictions == y_test))
    print(f"touched: {independent:.3f} -> {autoregressive:.3f}; {accuracy=:.3f}")
    assert accuracy > 0.85
    # How peaked the fixed map is (it differs between machines and backends)
    # decides how often two draws without replacement already touch both
    # needles: in 40-51% of test images on one AVX-512 CPU, 69-82% on an
    # AVX2-only one, and 69% / 77% / 82% (TF / JAX / torch) on an Intel Xeon
    # with AVX-512. So the margin is a ratio: the autoregressive draws remove
    # at least half of the misses of independent draws from the same map.
    assert 1 - autoregressive <= 0.5 * (1 - independent)
