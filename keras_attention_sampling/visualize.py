"""Pictures of what an attention-sampling model looked at.

* `attention_overlay`: the attention map blended over the full image,
  with boxes around the sampled patches and an optional caption;
* `patch_grid`: the sampled patches side by side, enlarged, with their
  attention weights;
* `save_png`: write either to disk.

Everything returns plain RGB ``uint8`` numpy arrays, so the pictures can go
to PNG files, TensorBoard, notebooks or matplotlib alike. Only numpy and
Pillow are required; matplotlib's colour maps are used when it is installed,
otherwise built-in copies of a few common ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Colour-map anchors (evenly spaced from 0 to 1), sampled from matplotlib so
# that pictures look the same with or without it installed.
_BUILTIN_ANCHORS = {
    "inferno": [
        [0, 0, 4],
        [11, 7, 36],
        [33, 12, 74],
        [61, 9, 101],
        [87, 16, 110],
        [113, 25, 110],
        [138, 34, 106],
        [163, 44, 97],
        [188, 55, 84],
        [210, 70, 68],
        [228, 90, 49],
        [241, 115, 29],
        [249, 142, 9],
        [252, 172, 17],
        [249, 203, 53],
        [242, 234, 105],
        [252, 255, 164],
    ],
    "viridis": [
        [68, 1, 84],
        [72, 24, 106],
        [71, 45, 123],
        [66, 64, 134],
        [59, 82, 139],
        [51, 99, 141],
        [44, 114, 142],
        [38, 130, 142],
        [33, 145, 140],
        [31, 160, 136],
        [40, 174, 128],
        [63, 188, 115],
        [94, 201, 98],
        [132, 212, 75],
        [173, 220, 48],
        [216, 226, 25],
        [253, 231, 37],
    ],
    "magma": [
        [0, 0, 4],
        [10, 8, 34],
        [29, 17, 71],
        [54, 16, 107],
        [81, 18, 124],
        [106, 28, 129],
        [131, 38, 129],
        [156, 46, 127],
        [183, 55, 121],
        [208, 65, 111],
        [231, 82, 99],
        [245, 107, 92],
        [252, 137, 97],
        [254, 167, 114],
        [254, 196, 136],
        [253, 226, 163],
        [252, 253, 191],
    ],
    "gray": [[0, 0, 0], [255, 255, 255]],
}
# matplotlib's "jet" is piecewise linear: (position, value) per channel.
_JET = (
    [(0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)],
    [(0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)],
    [(0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)],
)
BUILTIN_COLORMAPS = ("jet",) + tuple(_BUILTIN_ANCHORS)


def _to_numpy(value, name: str, caller: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple, int, float, np.generic)):
        return np.asarray(value)
    try:  # a backend tensor (TF, JAX, torch)
        import keras

        return np.asarray(keras.ops.convert_to_numpy(value))
    except Exception as error:
        raise ValueError(
            f"{caller}: cannot convert {name} of type {type(value).__name__} to numpy."
        ) from error


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (or [0, 255] if larger) and ints to uint8."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "f" and array.size and np.nanmax(array) <= 1.0:
        array = array * 255.0
    array = array.astype(np.float32)
    return np.clip(np.nan_to_num(array), 0, 255).round().astype(np.uint8)


def _image_to_rgb(image, caller: str) -> np.ndarray:
    image = _to_numpy(image, "image", caller)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or min(image.shape[:2]) == 0:
        raise ValueError(
            f"{caller}: image must have shape (H, W), (H, W, 1), (H, W, 3) or "
            f"(H, W, 4), got {image.shape}."
        )
    return _to_uint8(image[..., :3])


def colormap_lut(colormap: str | np.ndarray = "jet") -> np.ndarray:
    """Return a colour map as a ``(256, 3)`` ``uint8`` look-up table.

    Uses matplotlib when it is installed (any of its colour-map names works);
    otherwise built-in versions of ``"jet"``, ``"inferno"``, ``"viridis"``,
    ``"magma"`` and ``"gray"``.

    Args:
        colormap: A colour-map name, or an array ``(K, 3)`` of RGB anchors
            (``uint8`` or floats in [0, 1]) interpolated to 256 entries.

    Returns:
        The ``(256, 3)`` ``uint8`` table; entry 0 is the colour of the
        lowest value.

    Raises:
        ValueError: If the name is unknown or the array has the wrong shape.

    Examples:
        >>> lut = colormap_lut("gray")
        >>> lut.shape, lut[0].tolist(), lut[255].tolist()
        ((256, 3), [0, 0, 0], [255, 255, 255])
    """
    positions = np.linspace(0.0, 1.0, 256)
    if not isinstance(colormap, str):
        anchors = _to_uint8(np.asarray(colormap)).astype(np.float64)
        if anchors.ndim != 2 or anchors.shape[1] != 3 or len(anchors) < 2:
            raise ValueError(
                f"colormap_lut: a colormap array must have shape (K >= 2, 3), got "
                f"{anchors.shape}."
            )
        grid = np.linspace(0.0, 1.0, len(anchors))
        table = [np.interp(positions, grid, anchors[:, c]) for c in range(3)]
        return np.stack(table, axis=-1).round().astype(np.uint8)
    try:
        import matplotlib

        cmap = matplotlib.colormaps[colormap]
        return (cmap(positions)[:, :3] * 255).round().astype(np.uint8)
    except ImportError:
        pass
    except KeyError:
        raise ValueError(
            f"colormap_lut: unknown matplotlib colormap {colormap!r}."
        ) from None
    if colormap == "jet":
        table = [
            np.interp(positions, [p for p, _ in channel], [v for _, v in channel])
            for channel in _JET
        ]
        return (np.stack(table, axis=-1) * 255).round().astype(np.uint8)
    if colormap in _BUILTIN_ANCHORS:
        return colormap_lut(np.asarray(_BUILTIN_ANCHORS[colormap], dtype=np.uint8))
    raise ValueError(
        f"colormap_lut: unknown colormap {colormap!r}; without matplotlib the "
        f"choices are {list(BUILTIN_COLORMAPS)}."
    )


def _font(size: int):
    try:  # Pillow >= 10.1 with FreeType: a scalable built-in font
        return ImageFont.load_default(size=size), 1
    except (TypeError, ImportError, OSError):
        # The legacy bitmap font is ~11 px tall: render small, enlarge later.
        return ImageFont.load_default(), max(1, round(size / 11))


def _text_mask(text: str, height: int) -> np.ndarray:
    """White-on-black ``uint8`` mask of ``text`` with about ``height`` px lines."""
    font, upscale = _font(height)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.multiline_textbbox((0, 0), text, font=font)
    canvas = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(canvas).multiline_text((-left, -top), text, fill=255, font=font)
    if upscale > 1:
        canvas = canvas.resize(
            (canvas.width * upscale, canvas.height * upscale), Image.NEAREST
        )
    return np.asarray(canvas)


def _paste_text(canvas: np.ndarray, mask: np.ndarray, top: int, left: int, colour):
    """Alpha-blend a text mask into ``canvas`` (in place), clipped to it."""
    height = min(mask.shape[0], canvas.shape[0] - top)
    width = min(mask.shape[1], canvas.shape[1] - left)
    if height <= 0 or width <= 0:
        return
    alpha = mask[:height, :width, None].astype(np.float32) / 255.0
    region = canvas[top : top + height, left : left + width].astype(np.float32)
    blended = region * (1 - alpha) + np.asarray(colour, np.float32) * alpha
    canvas[top : top + height, left : left + width] = blended.round().astype(np.uint8)


def _fit_mask(mask: np.ndarray, max_width: int) -> np.ndarray:
    if mask.shape[1] <= max_width or max_width <= 0:
        return mask
    scale = max_width / mask.shape[1]
    size = (max_width, max(1, int(mask.shape[0] * scale)))
    return np.asarray(Image.fromarray(mask).resize(size, Image.LANCZOS))


def _box_extent(position, patch_h, patch_w, height, width):
    """Clipped inclusive (top, left, bottom, right) of a patch, or None."""
    top = math.floor(float(position[0])) - patch_h // 2
    left = math.floor(float(position[1])) - patch_w // 2
    bottom, right = top + patch_h - 1, left + patch_w - 1
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(bottom, height - 1), min(right, width - 1)
    if top > bottom or left > right:
        return None  # entirely outside the image
    return top, left, bottom, right


def attention_overlay(
    image,
    attention,
    positions=None,
    patch_size: int | Sequence[int] | None = None,
    *,
    alpha: float = 0.5,
    colormap: str | np.ndarray = "jet",
    interpolation: str = "bilinear",
    box_color: Sequence[int] = (255, 255, 255),
    box_width: int = 2,
    caption: str | None = None,
) -> np.ndarray:
    """Blend an attention map over an image and outline the sampled patches.

    The map is divided by its maximum (so its peak gets the top colour of
    the colour map, however small attention probabilities are), stretched to
    the image size, colour-mapped and alpha-blended. Each position gets a
    ``box_width``-pixel outline drawn just inside its patch: a patch centred
    at ``(y, x)`` covers rows ``floor(y) - ph // 2`` to
    ``floor(y) - ph // 2 + ph - 1`` (columns likewise), clipped at the
    image borders. A caption is written in white on a darkened band along
    the bottom edge, so the output keeps the input's size.

    Args:
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``;
            ``uint8``, or floats in [0, 1]. Numpy or backend tensor.
        attention: ``(h, w)``, ``(h, w, 1)`` or ``(1, h, w)`` non-negative
            map, e.g. ``AttentionSamplingModel.explain(...)["attention"][i]``.
        positions: ``(N, 2)`` patch centres ``(y, x)`` in full-resolution
            pixels (``explain(...)["positions"][i]``), or ``None``.
        patch_size: Patch side ``p`` or ``(ph, pw)``; required with
            ``positions``.
        alpha: Weight of the colour-mapped attention, in [0, 1].
        colormap: Colour-map name or ``(K, 3)`` anchors; see
            `colormap_lut`.
        interpolation: ``"bilinear"`` or ``"nearest"`` upsampling of the map.
        box_color: RGB of the patch outlines, or an ``(N, 3)`` array with
            one colour per patch.
        box_width: Outline thickness in pixels.
        caption: Optional text (may contain newlines).

    Returns:
        An RGB ``uint8`` array ``(H, W, 3)``.

    Raises:
        ValueError: On wrong shapes or arguments; the message names this
            function.

    Examples:
        >>> import numpy as np
        >>> image = np.zeros((60, 80, 3), dtype="uint8")
        >>> attention = np.random.default_rng(0).random((12, 16))
        >>> out = attention_overlay(image, attention, positions=[[30, 40]],
        ...                         patch_size=10, box_color=(0, 255, 0), caption="FL")
        >>> out.shape, out.dtype.name
        ((60, 80, 3), 'uint8')
        >>> out[25, 40].tolist()  # top edge of the box: rows 25..34
        [0, 255, 0]
    """
    caller = "attention_overlay"
    rgb = _image_to_rgb(image, caller)
    height, width = rgb.shape[:2]
    attention = _to_numpy(attention, "attention", caller).astype(np.float32)
    if attention.ndim == 3 and attention.shape[-1] == 1:
        attention = attention[..., 0]
    elif attention.ndim == 3 and attention.shape[0] == 1:  # a batch of one
        attention = attention[0]
    if attention.ndim != 2 or min(attention.shape) == 0:
        raise ValueError(
            f"{caller}: attention must have shape (h, w), (h, w, 1) or (1, h, w), "
            f"got {attention.shape}."
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{caller}: alpha must be in [0, 1], got {alpha}.")
    resample = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST}.get(interpolation)
    if resample is None:
        raise ValueError(
            f"{caller}: interpolation must be 'bilinear' or 'nearest', got {interpolation!r}."
        )

    attention = np.clip(np.nan_to_num(attention), 0.0, None)
    peak = float(attention.max())
    if peak > 0:
        attention = attention / peak
    upsampled = np.asarray(Image.fromarray(attention).resize((width, height), resample))
    levels = np.clip(upsampled * 255.0, 0, 255).round().astype(np.uint8)
    heat = colormap_lut(colormap)[levels].astype(np.float32)
    out = rgb.astype(np.float32) * (1.0 - alpha) + heat * alpha
    out = out.round().astype(np.uint8)

    if positions is not None:
        _draw_boxes(out, positions, patch_size, box_color, box_width, caller)
    if caption:
        _draw_caption(out, caption)
    return out


def _draw_boxes(out, positions, patch_size, box_color, box_width, caller):
    positions = _to_numpy(positions, "positions", caller).astype(np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(
            f"{caller}: positions must have shape (N, 2) as (y, x), got {positions.shape}."
        )
    if patch_size is None:
        raise ValueError(f"{caller}: patch_size is required when positions are given.")
    sizes = np.asarray(patch_size).reshape(-1).astype(int).tolist()
    if len(sizes) not in (1, 2):
        raise ValueError(
            f"{caller}: patch_size must be p or (ph, pw), got {patch_size}."
        )
    patch_h, patch_w = sizes * 2 if len(sizes) == 1 else sizes
    if patch_h <= 0 or patch_w <= 0:
        raise ValueError(f"{caller}: patch_size must be positive, got {patch_size}.")
    if int(box_width) <= 0:
        raise ValueError(f"{caller}: box_width must be positive, got {box_width}.")
    colours = np.asarray(box_color)
    if colours.shape == (3,):
        colours = np.broadcast_to(colours, (len(positions), 3))
    if colours.shape != (len(positions), 3):
        raise ValueError(
            f"{caller}: box_color must be one RGB triple or shape (N, 3) = "
            f"({len(positions)}, 3), got {np.asarray(box_color).shape}."
        )
    colours = _to_uint8(colours)
    height, width = out.shape[:2]
    thickness = int(box_width)
    for position, colour in zip(positions, colours):
        extent = _box_extent(position, patch_h, patch_w, height, width)
        if extent is None:
            continue
        top, left, bottom, right = extent
        t = min(thickness, bottom - top + 1, right - left + 1)
        out[top : top + t, left : right + 1] = colour
        out[bottom - t + 1 : bottom + 1, left : right + 1] = colour
        out[top : bottom + 1, left : left + t] = colour
        out[top : bottom + 1, right - t + 1 : right + 1] = colour


def _draw_caption(out, caption):
    height, width = out.shape[:2]
    text_height = max(12, height // 25)
    margin = max(2, text_height // 4)
    mask = _fit_mask(_text_mask(str(caption), text_height), width - 2 * margin)
    band = min(height, mask.shape[0] + 2 * margin)
    # Darken rather than replace, so the image stays faintly visible.
    out[height - band :] = (out[height - band :].astype(np.float32) * 0.35).astype(
        np.uint8
    )
    _paste_text(out, mask, height - band + margin, margin, (255, 255, 255))


def patch_grid(
    patches,
    attention=None,
    *,
    ncols: int | None = None,
    pad: int = 2,
    scale: int | None = None,
    labels: Sequence[str] | None = None,
    background: Sequence[int] = (255, 255, 255),
) -> np.ndarray:
    """Tile one image's sampled patches into an enlarged grid picture.

    Patches are enlarged by an integer factor (nearest neighbour, so pixels
    stay crisp) and laid out row by row. With ``attention`` and/or
    ``labels``, a caption strip under each tile shows the label and the
    patch's attention weight.

    Args:
        patches: ``(N, ph, pw, C)`` with ``C`` in 1, 3, 4, or ``(N, ph, pw)``;
            ``uint8``, or floats in [0, 1] (floats above 1 are read as
            0..255). Numpy or backend tensor.
        attention: Optional ``(N,)`` weights, printed with three significant
            digits (sampling probabilities are often far below 0.001).
        ncols: Tiles per row; defaults to ``ceil(sqrt(N))``.
        pad: Pixels of ``background`` between and around tiles.
        scale: Integer enlargement; defaults to the smallest factor making
            tiles at least 96 px on their longer side.
        labels: Optional ``N`` strings (e.g. predicted class per patch).
        background: RGB of the padding and caption strips.

    Returns:
        An RGB ``uint8`` array.

    Raises:
        ValueError: On wrong shapes; the message names this function.

    Examples:
        >>> import numpy as np
        >>> patches = np.random.default_rng(0).random((5, 20, 20, 3))
        >>> grid = patch_grid(patches, pad=2, scale=2)
        >>> grid.shape  # 3 columns x 2 rows of 40 px tiles
        (86, 128, 3)
        >>> patch_grid(patches, attention=np.full(5, 0.2)).dtype.name
        'uint8'
    """
    caller = "patch_grid"
    patches = _to_numpy(patches, "patches", caller)
    if patches.ndim == 3:
        patches = patches[..., None]
    if patches.ndim != 4 or patches.shape[-1] not in (1, 3, 4) or 0 in patches.shape:
        raise ValueError(
            f"{caller}: patches must have shape (N, ph, pw, C) with C in (1, 3, 4) "
            f"or (N, ph, pw), got {patches.shape}."
        )
    count, patch_h, patch_w = patches.shape[:3]
    if patches.shape[-1] == 1:
        patches = np.repeat(patches, 3, axis=-1)
    tiles = _to_uint8(patches[..., :3])

    if attention is not None:
        attention = _to_numpy(attention, "attention", caller).reshape(-1)
        if attention.shape != (count,):
            raise ValueError(
                f"{caller}: attention must hold one weight per patch ({count}), got "
                f"{attention.size} values."
            )
    if labels is not None:
        labels = [str(label) for label in labels]
        if len(labels) != count:
            raise ValueError(
                f"{caller}: labels must hold one string per patch ({count}), got "
                f"{len(labels)}."
            )
    if ncols is None:
        ncols = math.ceil(math.sqrt(count))
    if int(ncols) <= 0 or int(pad) < 0:
        raise ValueError(
            f"{caller}: ncols must be positive and pad >= 0, got {ncols}, {pad}."
        )
    if scale is None:
        scale = max(1, math.ceil(96 / max(patch_h, patch_w)))
    if int(scale) <= 0:
        raise ValueError(f"{caller}: scale must be a positive integer, got {scale}.")
    ncols, pad, scale = min(int(ncols), count), int(pad), int(scale)
    nrows = math.ceil(count / ncols)

    tile_h, tile_w = patch_h * scale, patch_w * scale
    texts = None
    if attention is not None or labels is not None:
        texts = [
            " ".join(
                part
                for part in (
                    labels[i] if labels is not None else "",
                    f"{float(attention[i]):.3g}" if attention is not None else "",
                )
                if part
            )
            for i in range(count)
        ]
    text_height = max(10, tile_w // 8)
    strip = text_height + 4 if texts is not None else 0

    cell_h, cell_w = tile_h + strip + pad, tile_w + pad
    grid = np.empty((nrows * cell_h + pad, ncols * cell_w + pad, 3), dtype=np.uint8)
    grid[:] = _to_uint8(np.asarray(background)).reshape(3)
    for i in range(count):
        top = pad + (i // ncols) * cell_h
        left = pad + (i % ncols) * cell_w
        grid[top : top + tile_h, left : left + tile_w] = np.repeat(
            np.repeat(tiles[i], scale, axis=0), scale, axis=1
        )
        if texts is not None and texts[i]:
            mask = _fit_mask(_text_mask(texts[i], text_height), tile_w)
            _paste_text(grid, mask, top + tile_h + 2, left, (0, 0, 0))
    return grid


def save_png(array, path: str | os.PathLike) -> str:
    """Write an image array to a PNG file, creating parent folders.

    Args:
        array: ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``; ``uint8``, or
            floats in [0, 1]. Numpy or backend tensor.
        path: Destination file.

    Returns:
        The path written, as a string.

    Raises:
        ValueError: If the array has an unsupported shape.

    Examples:
        >>> import os, tempfile
        >>> import numpy as np
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = save_png(np.zeros((4, 5, 3), "uint8"), os.path.join(tmp.name, "out", "x.png"))
        >>> os.path.isfile(path)
        True
    """
    array = _to_numpy(array, "array", "save_png")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))) or (
        0 in array.shape
    ):
        raise ValueError(
            f"save_png: array must have shape (H, W), (H, W, 3) or (H, W, 4), got "
            f"{array.shape}."
        )
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(_to_uint8(array))).save(path, format="PNG")
    return path
