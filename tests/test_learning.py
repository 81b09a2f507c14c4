"""The method learns where to look, and looking matters.

A tiny task whose label is visible only in one small region: 64x64 noise
with one 8x8 square whose colour is the class. The attention map has 8x8
cells and the model sees 4 patches of 16x16, so a uniformly placed patch
rarely covers the square.
"""

import time

import keras
import numpy as np

import keras_attention_sampling as kas

SIZE, SQUARE = 64, 8


def square_task(n, seed):
    rng = np.random.default_rng(seed)
    images = (rng.random((n, SIZE, SIZE, 3)) * 128 + 64).astype("uint8")
    labels = rng.integers(0, 3, n)
    corners = rng.integers(0, SIZE - SQUARE + 1, (n, 2))
    for image, label, (top, left) in zip(images, labels, corners):
        image[top : top + SQUARE, left : left + SQUARE] = 255 * np.eye(3)[label]
    return images, labels, corners


def attention_mass_on_square(attention, corners):
    """Attention mass of the cells whose patch would contain square pixels."""
    cells = attention.shape[1]
    cell = SIZE / cells
    centres = (np.arange(cells) + 0.5) * cell
    masses = []
    for a, (top, left) in zip(attention, corners):
        rows = (centres >= top - cell / 2) & (centres <= top + SQUARE + cell / 2)
        cols = (centres >= left - cell / 2) & (centres <= left + SQUARE + cell / 2)
        masses.append(a[np.ix_(rows, cols)].sum())
    return float(np.mean(masses))


def train(frozen_attention, epochs=4):
    keras.utils.set_random_seed(0)
    x, y, _ = square_task(1024, seed=0)
    attention = kas.AttentionMap()
    # The leave-one-out baseline and a first-moment decay of 0.9 make this
    # reliable across seeds and backends; with the reference notebook's batch-mean
    # baseline and beta_1=0.999 some initialisations stay at chance for
    # several epochs (see the closing notes of the core issue).
    model = kas.AttentionSamplingModel(
        3,
        attention_network=attention,
        scale=8,
        n_patches=4,
        patch_size=16,
        samples_per_image=4,
        entropy_weight=0.01,
        baseline="leave_one_out",
        seed=1,
    )
    model.build((None, SIZE, SIZE, 3))
    if frozen_attention:
        # A zero head gives the uniform distribution; freezing keeps it.
        attention.head.set_weights(
            [np.zeros_like(w) for w in attention.head.get_weights()]
        )
        attention.trainable = False
    model.compile(
        attention_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.9),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)
    return model, time.perf_counter() - start


def test_learned_attention_finds_the_evidence_and_beats_uniform_sampling():
    x_test, y_test, corners = square_task(256, seed=1)
    model, seconds = train(frozen_attention=False)
    # Evaluate exactly as predict does: inference mode, sampled patches.
    learned = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    predicted = model.predict(x_test, verbose=0).argmax(-1)
    assert np.mean(predicted == y_test) > 0.85
    mass = attention_mass_on_square(
        model.explain(x_test[:64])["attention"], corners[:64]
    )

    uniform_model, _ = train(frozen_attention=True)
    uniform = uniform_model.evaluate(x_test, y_test, verbose=0, return_dict=True)[
        "accuracy"
    ]
    uniform_mass = attention_mass_on_square(
        uniform_model.explain(x_test[:64])["attention"], corners[:64]
    )

    print(
        f"learned {learned:.3f} (mass {mass:.2f}, {seconds:.0f} s), "
        f"uniform {uniform:.3f} (mass {uniform_mass:.2f})"
    )
    assert learned > 0.85
    assert mass > 0.3 and mass > 3 * uniform_mass
    assert learned - uniform > 0.15
    # Wall time is printed, not asserted: the machines are shared, and speed
    # targets belong to examples/benchmarks, not to tests.
