"""Tests of keras_attention_sampling.visualize."""

import sys

import numpy as np
import pytest
from PIL import Image

from keras_attention_sampling.visualize import (
    attention_overlay,
    colormap_lut,
    patch_grid,
    save_png,
)

GREEN = [0, 255, 0]


def _is(colour, pixel):
    return np.asarray(pixel).tolist() == list(colour)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((60, 80, 3), np.uint8),
        np.zeros((60, 80), np.uint8),
        np.zeros((60, 80, 1), np.float32),
        np.zeros((60, 80, 4), np.uint8),
        np.full((60, 80, 3), 0.5, np.float64),
    ],
    ids=["rgb", "grey", "grey1-float", "rgba", "float"],
)
def test_overlay_shape_and_dtype(image):
    out = attention_overlay(image, np.ones((12, 16)))
    assert out.shape == (60, 80, 3) and out.dtype == np.uint8


def test_overlay_boxes_follow_positions():
    image = np.zeros((60, 80, 3), np.uint8)
    out = attention_overlay(
        image,
        np.zeros((6, 8)),
        positions=np.array([[30.0, 40.0]]),
        patch_size=10,
        colormap="gray",
        box_color=(0, 255, 0),
        box_width=2,
    )
    # Patch rows 30 - 5 .. 30 - 5 + 9 = 25..34, columns 35..44.
    for x in range(35, 45):
        for y in (25, 26, 33, 34):  # top and bottom edges, 2 px thick
            assert _is(GREEN, out[y, x]), (y, x)
    for y in range(25, 35):
        for x in (35, 36, 43, 44):  # left and right edges
            assert _is(GREEN, out[y, x]), (y, x)
    # Just outside and just inside the outline: untouched (black heat, alpha .5).
    for y, x in [(24, 40), (35, 40), (30, 34), (30, 45), (27, 40), (30, 37), (30, 42)]:
        assert _is([0, 0, 0], out[y, x]), (y, x)
    assert (np.all(out == GREEN, axis=-1)).sum() == 2 * 10 * 2 + 2 * 6 * 2


def test_overlay_boxes_odd_size_fractional_and_clipped():
    image = np.zeros((40, 40, 3), np.uint8)
    colours = np.array([[255, 0, 0], [0, 0, 255], [0, 255, 0]], np.uint8)
    positions = [[10.7, 20.2], [0.0, 0.0], [-50.0, 10.0]]  # normal, corner, outside
    out = attention_overlay(
        image,
        np.zeros((4, 4)),
        positions,
        patch_size=5,
        colormap="gray",
        box_color=colours,
        box_width=1,
    )
    red = np.all(out == [255, 0, 0], axis=-1)
    # floor(10.7) - 2 = 8 .. 12 rows, floor(20.2) - 2 = 18 .. 22 columns.
    assert red[8, 18:23].all() and red[12, 18:23].all()
    assert red[8:13, 18].all() and red[8:13, 22].all()
    assert red.sum() == 16 and not red[10, 20]
    blue = np.all(out == [0, 0, 255], axis=-1)
    # Corner patch covers rows/cols -2..2, clipped to 0..2: outline of a 3x3.
    assert blue[:3, :3].sum() == 8 and not blue[1, 1] and blue.sum() == 8
    assert not np.all(out == GREEN, axis=-1).any()  # outside: nothing drawn


def test_overlay_heat_alpha_and_normalisation():
    image = np.full((20, 20, 3), 100, np.uint8)
    attention = np.array([[0.0, 1.0], [0.0, 0.0]])
    heat = attention_overlay(
        image, attention, alpha=1.0, colormap="gray", interpolation="nearest"
    )
    assert (heat[:10, 10:] == 255).all() and (heat[:10, :10] == 0).all()
    assert (heat[10:] == 0).all()
    # Attention probabilities are tiny; the map is scaled by its maximum.
    small = attention_overlay(
        image, attention * 1e-4, alpha=1.0, colormap="gray", interpolation="nearest"
    )
    np.testing.assert_array_equal(heat, small)
    batched = attention_overlay(
        image, attention[None], alpha=1.0, colormap="gray", interpolation="nearest"
    )  # (1, h, w), as from explain
    np.testing.assert_array_equal(heat, batched)
    np.testing.assert_array_equal(attention_overlay(image, attention, alpha=0.0), image)
    half = attention_overlay(
        image, attention, alpha=0.5, colormap="gray", interpolation="nearest"
    )
    assert half[0, 15].tolist() == [178, 178, 178] and half[15, 5].tolist() == [
        50,
        50,
        50,
    ]
    smooth = attention_overlay(image, attention, alpha=1.0, colormap="gray")
    assert len(np.unique(smooth[..., 0])) > 2  # bilinear: a gradient
    uniform = attention_overlay(image, np.zeros((3, 3)), alpha=1.0, colormap="gray")
    assert (uniform == 0).all()


def test_overlay_accepts_backend_tensors():
    import keras

    image = keras.ops.convert_to_tensor(np.zeros((16, 16, 3), np.float32))
    attention = keras.ops.convert_to_tensor(np.ones((4, 4, 1), np.float32))
    positions = keras.ops.convert_to_tensor(np.array([[8, 8]], np.int32))
    out = attention_overlay(image, attention, positions, patch_size=4, box_color=GREEN)
    assert out.shape == (16, 16, 3) and _is(GREEN, out[6, 6])


def test_overlay_caption_keeps_size_and_is_drawn():
    image = np.full((120, 160, 3), 255, np.uint8)
    plain = attention_overlay(image, np.ones((3, 4)), alpha=0.0)
    out = attention_overlay(
        image, np.ones((3, 4)), alpha=0.0, caption="FL (p=0.93)\nslide sj-05"
    )
    assert out.shape == plain.shape
    changed = np.any(out != plain, axis=-1)
    rows = np.flatnonzero(changed.any(axis=1))
    assert rows.min() > 60 and rows.max() == 119  # a band along the bottom
    band = out[rows.min() :]
    assert (band < 100).any() and (band > 200).any()  # dark band, light text
    # A very long caption is shrunk to fit instead of overflowing.
    long = attention_overlay(image, np.ones((3, 4)), caption="x" * 300)
    assert long.shape == plain.shape


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(attention=np.ones((2, 3, 4))), "attention must have shape"),
        (dict(image=np.ones(5)), "image must have shape"),
        (
            dict(positions=np.ones((3, 3)), patch_size=4),
            r"positions must have shape \(N, 2\)",
        ),
        (dict(positions=np.ones((3, 2))), "patch_size is required"),
        (dict(alpha=1.5), "alpha"),
        (dict(interpolation="cubic"), "interpolation"),
        (
            dict(positions=np.ones((2, 2)), patch_size=4, box_color=np.ones((3, 3))),
            "box_color",
        ),
        (dict(colormap="no-such-map"), "colormap"),
    ],
)
def test_overlay_validation(kwargs, message):
    arguments = dict(image=np.zeros((8, 8, 3), np.uint8), attention=np.ones((2, 2)))
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        attention_overlay(**arguments)


def test_overlay_error_names_the_function():
    with pytest.raises(ValueError, match="attention_overlay"):
        attention_overlay(np.zeros((8, 8, 3)), np.ones((2, 2, 2)))


def test_colormaps_are_matplotlibs_and_arrays_need_no_matplotlib(monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    positions = np.linspace(0, 1, 256)
    for name in ("jet", "inferno", "viridis", "gray"):
        expected = (matplotlib.colormaps[name](positions)[:, :3] * 255).round()
        np.testing.assert_array_equal(colormap_lut(name), expected.astype(np.uint8))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now fails
    with pytest.raises(ImportError, match=r"keras-attention-sampling\[viz\]"):
        colormap_lut("jet")
    red = np.array([[0, 0, 0], [255, 0, 0]], np.uint8)
    out = attention_overlay(
        np.zeros((8, 8, 3), np.uint8), np.ones((2, 2)), colormap=red
    )
    assert out.shape == (8, 8, 3) and out[..., 0].min() == 128  # alpha 0.5 of red


def test_colormap_from_anchor_array():
    lut = colormap_lut(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert lut[0].tolist() == [0, 0, 0] and lut[-1].tolist() == [255, 0, 0]
    with pytest.raises(ValueError, match="colormap_lut"):
        colormap_lut(np.ones((3, 4)))


def test_patch_grid_layout_and_content():
    rng = np.random.default_rng(0)
    patches = rng.random((5, 10, 10, 3)).astype(np.float32)
    grid = patch_grid(patches, ncols=2, pad=3, scale=4)
    # 2 columns x 3 rows of 40 px tiles with 3 px padding.
    assert grid.shape == (3 * 43 + 3, 2 * 43 + 3, 3) and grid.dtype == np.uint8
    first = np.repeat(
        np.repeat((patches[0] * 255).round().astype(np.uint8), 4, 0), 4, 1
    )
    np.testing.assert_array_equal(grid[3:43, 3:43], first)
    fifth = grid[3 + 2 * 43 : 3 + 2 * 43 + 40, 3:43]  # row 2, column 0
    np.testing.assert_array_equal(
        fifth[::4, ::4], (patches[4] * 255).round().astype(np.uint8)
    )
    assert (grid[:3] == 255).all() and (
        grid[-46:, 46:] == 255
    ).all()  # padding, empty cell

    grey = patch_grid(rng.integers(0, 255, (4, 20, 20), np.uint8), pad=0, scale=1)
    assert grey.shape == (40, 40, 3)
    assert (
        patch_grid(np.ones((3, 50, 50, 1), np.uint8)).shape[0] >= 100
    )  # default upscale


def test_patch_grid_annotations():
    patches = np.zeros((4, 16, 16, 3), np.uint8) + 128
    plain = patch_grid(patches, scale=6, pad=2)
    annotated = patch_grid(
        patches,
        attention=np.array([0.5, 0.25, 0.125, 0.125]),
        labels=["CLL", "FL", "MCL", "FL"],
        scale=6,
        pad=2,
    )
    assert annotated.shape[1] == plain.shape[1] and annotated.shape[0] > plain.shape[0]
    strip = annotated[2 + 96 : 2 + 96 + 10, 2 : 2 + 96]  # under the first tile
    assert (strip < 128).any()  # dark text on the white strip
    with pytest.raises(ValueError, match="patch_grid: attention"):
        patch_grid(patches, attention=np.ones(3))
    with pytest.raises(ValueError, match="patch_grid: labels"):
        patch_grid(patches, labels=["a"])
    with pytest.raises(ValueError, match="patch_grid: patches"):
        patch_grid(np.zeros((4, 16, 16, 2)))


def test_patch_grid_value_ranges():
    as_255 = np.full((1, 2, 2, 3), 200.0)  # floats above 1 are read as 0..255
    assert patch_grid(as_255, pad=0, scale=1)[0, 0].tolist() == [200, 200, 200]
    as_unit = np.full((1, 2, 2, 3), 0.5)
    assert patch_grid(as_unit, pad=0, scale=1)[0, 0].tolist() == [128, 128, 128]


def test_save_png_round_trip(tmp_path):
    array = np.random.default_rng(0).integers(0, 255, (7, 9, 3), np.uint8)
    path = save_png(array, tmp_path / "nested" / "dir" / "overlay.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), array)
    grey = save_png(np.full((3, 4), 0.5), tmp_path / "grey.png")
    assert np.asarray(Image.open(grey)).tolist() == [[128] * 4] * 3
    with pytest.raises(ValueError, match="save_png"):
        save_png(np.zeros((3, 4, 2)), tmp_path / "bad.png")


def test_overlay_rectangular_patch_size():
    out = attention_overlay(
        np.zeros((20, 20, 3), np.uint8),
        np.zeros((2, 2)),
        positions=[[10, 10]],
        patch_size=np.array([4, 8]),
        colormap="gray",
        box_color=GREEN,
        box_width=1,
    )
    green = np.all(out == GREEN, axis=-1)
    rows, cols = np.nonzero(green)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (8, 11, 6, 13)


def test_sequence_picture_numbers_the_draws_and_strips_the_maps():
    from keras_attention_sampling.visualize import sequence_picture

    image = np.zeros((64, 64, 3), np.uint8)
    maps = np.zeros((2, 8, 8))
    maps[0, 1, 1] = maps[1, 5, 6] = 1.0
    positions = [[12, 12], [44, 52]]
    picture = sequence_picture(image, maps, positions, 20, colormap="gray")
    assert picture.shape == (64 + 16, 64, 3)
    top, strip = picture[:64], picture[64:]
    # Inside the first box, past its 2-pixel outline: the number "1".
    assert (top[5:14, 5:14] > 150).all(axis=-1).any()  # anti-aliased text
    # Each thumbnail shows its own map: the second map's bright cell is in
    # the bottom-right quarter, the first map's is not (its number sits top
    # left, in white, so that quarter is left out).
    first, second = strip[1:15, 1:15].mean(-1), strip[1:15, 33:47].mean(-1)
    assert second[7:, 7:].max() > 60 > first[7:, 7:].max()
    with pytest.raises(ValueError, match="sequence_picture: step_attention"):
        sequence_picture(image, maps[:1], positions, 20)
