"""The sampling maths against numpy and statistics."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_attention_sampling as kas
from keras_attention_sampling import sampling


def test_log_softmax_2d_sums_to_one_and_stays_finite():
    logits = np.array([[[0.0, 500.0], [-500.0, 3.0]]], "float32")
    log_probs = ops.convert_to_numpy(sampling.log_softmax_2d(logits))
    assert np.all(np.isfinite(log_probs))
    # exp underflows for the small cells, the log-probabilities do not.
    np.testing.assert_allclose(log_probs[0, 0, 0], -500.0, rtol=1e-6)
    np.testing.assert_allclose(log_probs[0, 1, 0], -1000.0, rtol=1e-6)
    np.testing.assert_allclose(np.exp(log_probs).sum(), 1.0, rtol=1e-6)


def test_log_softmax_2d_matches_numpy(rng):
    logits = rng.normal(size=(3, 4, 5)).astype("float32")
    flat = logits.reshape(3, -1)
    expected = flat - np.log(np.exp(flat).sum(-1, keepdims=True))
    got = ops.convert_to_numpy(sampling.log_softmax_2d(logits))
    np.testing.assert_allclose(got.reshape(3, -1), expected, atol=1e-5)


def _chi_square_p_value(counts, probabilities):
    from scipy import stats

    probabilities = np.asarray(probabilities, "float64")
    expected = probabilities / probabilities.sum() * counts.sum()
    return stats.chisquare(counts, expected).pvalue


@pytest.mark.parametrize(
    "replace, cells, seed",
    [
        (True, 12, keras.random.SeedGenerator(3)),
        # 37 cells: drawn block by block (7 blocks of 6, the last padded).
        (True, 37, keras.random.SeedGenerator(3)),
        # An integer seed must not give the block and the cell the same bits.
        (True, 37, 11),
        (False, 12, keras.random.SeedGenerator(3)),
    ],
)
def test_sample_frequencies_match_attention(rng, replace, cells, seed):
    probabilities = rng.dirichlet(np.ones(cells)).astype("float32")
    if replace:
        # Every draw is a categorical sample of the map.
        log_probs = np.log(probabilities)[None].repeat(50 * cells // 12, axis=0)
        drawn = sampling.sample_cells(log_probs, 100, replace=True, seed=seed)
        draws, expected = ops.convert_to_numpy(drawn).ravel(), probabilities
    else:
        # The second Gumbel-top-k draw comes from what the first left:
        # P(s_2 = j) = sum_{i != j} a_i a_j / (1 - a_i).
        log_probs = np.log(probabilities)[None].repeat(5000, axis=0)
        drawn = sampling.sample_cells(log_probs, 2, replace=False, seed=seed)
        draws = ops.convert_to_numpy(drawn)[:, 1]
        p = probabilities.astype("float64")
        expected = p * ((p / (1 - p)).sum() - p / (1 - p))
    counts = np.bincount(draws, minlength=cells)
    assert counts.size == cells  # no draw lands in the padding
    assert _chi_square_p_value(counts, expected) > 1e-3


def test_block_draws_never_pick_a_zero_probability_cell():
    # Cells of probability 0 (log -inf), as a tissue mask makes them, and
    # whole blocks of them, are never drawn.
    log_probs = np.full((4, 50), -np.inf, "float32")
    log_probs[:, [3, 41, 49]] = np.log([0.5, 0.25, 0.25])
    drawn = sampling.sample_cells(
        log_probs, 200, replace=True, seed=keras.random.SeedGenerator(1)
    )
    assert set(np.unique(ops.convert_to_numpy(drawn)).tolist()) == {3, 41, 49}


def test_first_draw_without_replacement_follows_attention(rng):
    # The first Gumbel-top-k draw is an ordinary categorical sample.
    probabilities = rng.dirichlet(np.ones(10)).astype("float32")
    log_probs = np.log(probabilities)[None].repeat(5000, axis=0)
    cells = ops.convert_to_numpy(
        sampling.sample_cells(
            log_probs, 3, replace=False, seed=keras.random.SeedGenerator(5)
        )
    )
    counts = np.bincount(cells[:, 0], minlength=10)
    assert _chi_square_p_value(counts, probabilities) > 1e-3


def test_sampling_can_fail_the_frequency_check(rng):
    # The chi-square check is able to reject a wrong distribution.
    probabilities = rng.dirichlet(np.ones(12)).astype("float32")
    cells = ops.convert_to_numpy(
        sampling.sample_cells(
            np.log(probabilities)[None].repeat(50, axis=0),
            100,
            seed=keras.random.SeedGenerator(3),
        )
    )
    counts = np.bincount(cells.ravel(), minlength=12)
    assert _chi_square_p_value(counts, np.full(12, 1 / 12)) < 1e-3


def test_no_duplicates_without_replacement(rng):
    log_probs = np.log(rng.dirichlet(np.ones(30), size=64)).astype("float32")
    cells = ops.convert_to_numpy(
        sampling.sample_cells(
            log_probs, 30, replace=False, seed=keras.random.SeedGenerator(0)
        )
    )
    for row in cells:
        assert len(set(row.tolist())) == 30


def test_draw_log_prob_without_replacement_is_sequential(rng):
    probabilities = rng.dirichlet(np.ones(6), size=2).astype("float32")
    cells = np.array([[4, 1, 0], [2, 5, 3]], "int32")
    got = ops.convert_to_numpy(
        sampling.draw_log_prob(np.log(probabilities), cells, replace=False)
    )
    for b in range(2):
        used = 0.0
        for n, cell in enumerate(cells[b]):
            expected = np.log(probabilities[b, cell] / (1.0 - used))
            np.testing.assert_allclose(got[b, n], expected, rtol=1e-5)
            used += probabilities[b, cell]
    with_replacement = ops.convert_to_numpy(
        sampling.draw_log_prob(np.log(probabilities), cells, replace=True)
    )
    np.testing.assert_allclose(
        with_replacement, np.log(np.take_along_axis(probabilities, cells, 1)), rtol=1e-5
    )


def test_centres_and_cells_round_trip():
    cells = np.arange(6 * 7, dtype="int32").reshape(2, 21)
    centres = sampling.cells_to_centres(cells, (6, 7), (45, 50))
    centres = ops.convert_to_numpy(centres)
    np.testing.assert_allclose(centres[0, 0], [45 / 6 / 2, 50 / 7 / 2], rtol=1e-6)
    # Each centre lies inside its own cell.
    rows = np.floor(centres[..., 0] * 6 / 45).astype("int32")
    cols = np.floor(centres[..., 1] * 7 / 50).astype("int32")
    back = rows * 7 + cols
    np.testing.assert_array_equal(back, cells)


@pytest.mark.parametrize("padding", ["reflect", "constant"])
@pytest.mark.parametrize("patch_size", [5, 8])
def test_patches_equal_numpy_slices_borders_included(rng, padding, patch_size):
    images = rng.integers(0, 255, size=(2, 17, 23, 3)).astype("uint8")
    # Centres at every corner and edge plus interior ones.
    positions = np.array(
        [
            [[0.2, 0.7], [16.9, 22.5], [0.0, 22.0], [8.5, 11.5]],
            [[16.0, 0.0], [3.3, 20.1], [9.9, 1.2], [12.0, 12.0]],
        ],
        "float32",
    )
    patches = ops.convert_to_numpy(
        sampling.gather_patches(images, positions, patch_size, padding, fill_value=7)
    )
    assert patches.dtype == np.uint8
    pad = patch_size
    if padding == "reflect":
        padded = np.pad(
            images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect"
        )
    else:
        padded = np.pad(
            images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=7
        )
    for b in range(2):
        for n in range(4):
            top = int(np.floor(positions[b, n, 0])) - patch_size // 2 + pad
            left = int(np.floor(positions[b, n, 1])) - patch_size // 2 + pad
            expected = padded[b, top : top + patch_size, left : left + patch_size]
            np.testing.assert_array_equal(patches[b, n], expected)


def _numpy_average_pool(images, scale):
    batch, height, width, channels = images.shape
    rows, cols = height // scale, width // scale
    crop = images[:, : rows * scale, : cols * scale].astype("float64")
    return crop.reshape(batch, rows, scale, cols, scale, channels).mean(axis=(2, 4))


@pytest.mark.parametrize(
    "shape,scale", [((2, 12, 18, 3), 3), ((1, 23, 17, 2), 5), ((2, 8, 8, 1), 1)]
)
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_downsample_matches_average_pool(rng, shape, scale, dtype):
    images = rng.integers(0, 256, shape).astype(dtype)
    got = ops.convert_to_numpy(kas.Downsample(scale)(images))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _numpy_average_pool(images, scale), rtol=1e-6)
    pooled = ops.average_pool(ops.cast(images, "float32"), scale, scale, "valid")
    np.testing.assert_allclose(got, ops.convert_to_numpy(pooled), rtol=1e-5)


def test_downsample_sums_in_float32_for_a_float16_result():
    # 400 pixels of 255 sum to 102,000, past float16's largest value (65,504):
    # summed in float16 the mean would be inf.
    images = np.full((1, 20, 20, 1), 255, "uint8")
    low = kas.Downsample(20, dtype="float16")(images)
    assert ops.convert_to_numpy(low).dtype == np.float16
    np.testing.assert_allclose(ops.convert_to_numpy(ops.cast(low, "float32")), 255.0)


def test_downsample_rejects_a_bad_scale():
    with pytest.raises(ValueError, match="Downsample: scale"):
        kas.Downsample(0)


def test_downsample_traces_in_a_functional_model(rng):
    images = rng.integers(0, 256, (2, 12, 18, 3)).astype("uint8")
    inputs = keras.Input((12, 18, 3), dtype="uint8")
    outputs = kas.Downsample(3)(inputs)
    model = keras.Model(inputs, outputs)
    assert tuple(model.output_shape) == (None, 4, 6, 3)
    np.testing.assert_allclose(
        model.predict(images, verbose=0), _numpy_average_pool(images, 3), rtol=1e-6
    )
