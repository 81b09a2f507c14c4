"""Pictures of what an attention-sampling model looked at.

* `attention_overlay`: the attention map blended over the full image, with
  boxes around the sampled patches and an optional caption;
* `explanation_picture`: the image with its patches outlined next to the
  same image under its attention, captioned;
* `sequence_picture`: an `AutoregressiveSampler`'s draws, numbered in
  order, over a strip of the map each draw was made from;
* `patch_grid`: the sampled patches side by side, enlarged, with their
  attention weights;
* `save_png`: write either to disk.

Everything returns plain RGB ``uint8`` numpy arrays, so the pictures can go
to PNG files, TensorBoard, notebooks or matplotlib alike. Boxes and text are
drawn with Pillow's ``ImageDraw``; colour maps are matplotlib's, from the
``viz`` extra (``pip install "keras-attention-sampling[viz]"``). Without
matplotlib, pass a colour map as an array of anchor colours.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


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

    Args:
        colormap: The name of a matplotlib colour map (needs the ``viz``
            extra), or an array ``(K, 3)`` of RGB anchors (``uint8`` or
            floats in [0, 1]), evenly spaced and interpolated to 256 entries.

    Returns:
        The ``(256, 3)`` ``uint8`` table; entry 0 is the colour of the
        lowest value.

    Raises:
        ValueError: If the name is unknown or the array has the wrong shape.
        ImportError: For a name, when matplotlib is not installed.

    Examples:
        >>> lut = colormap_lut("gray")
        >>> lut.shape, lut[0].tolist(), lut[255].tolist()
        ((256, 3), [0, 0, 0], [255, 255, 255])
        >>> colormap_lut([[0, 0, 0], [255, 0, 0]])[128].tolist()
        [128, 0, 0]
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
    except ImportError:
        raise ImportError(
            f"colormap_lut: the colour map {colormap!r} is matplotlib's; install "
            "it with `pip install 'keras-attention-sampling[viz]'`, or pass the "
            "colour map as a (K, 3) array of anchor colours."
        ) from None
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ValueError(
            f"colormap_lut: unknown matplotlib colormap {colormap!r}."
        ) from None
    return (cmap(positions)[:, :3] * 255).round().astype(np.uint8)


def _font(size: int):
    return ImageFont.load_default(size=max(1, int(size)))


def _fitted_font(draw, text: str, size: int, max_width: int):
    """The default font at `size`, made smaller until `text` fits `max_width`."""
    font = _font(size)
    left, _, right, _ = draw.multiline_textbbox((0, 0), text, font=font)
    if right - left > max_width > 0:
        font = _font(size * max_width / (right - left))
    return font


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
            f"{caller}: interpolation must be 'bilinear' or 'nearest', "
            f"got {interpolation!r}."
        )
    if positions is not None:
        boxes = _boxes(positions, patch_size, box_color, box_width, (height, width))

    attention = np.clip(np.nan_to_num(attention), 0.0, None)
    peak = float(attention.max())
    if peak > 0:
        attention = attention / peak
    upsampled = np.asarray(Image.fromarray(attention).resize((width, height), resample))
    levels = np.clip(upsampled * 255.0, 0, 255).round().astype(np.uint8)
    heat = colormap_lut(colormap)[levels].astype(np.float32)
    blended = (rgb.astype(np.float32) * (1.0 - alpha) + heat * alpha).round()
    picture = Image.fromarray(blended.astype(np.uint8))

    draw = ImageDraw.Draw(picture)
    if positions is not None:
        for extent, colour, thickness in boxes:
            top, left, bottom, right = extent
            draw.rectangle((left, top, right, bottom), outline=colour, width=thickness)
    if caption:
        _draw_caption(picture, str(caption))
    return np.asarray(picture)


def explanation_picture(
    image,
    attention,
    positions,
    patch_size: int | Sequence[int],
    captions: Sequence[str] = ("", ""),
    *,
    gap: int = 8,
    **overlay_arguments,
) -> np.ndarray:
    """The image with its sampled patches outlined, next to its attention.

    Two `attention_overlay` pictures side by side: on the left the image
    with the patches outlined (``alpha=0``), on the right the attention
    blended over it (``alpha=0.5``), ``gap`` white pixels apart, each with
    its caption.

    Args:
        image: ``(H, W, C)`` image, as for `attention_overlay`.
        attention: ``(h, w)`` map, e.g. ``explain(x)["attention"][i]``.
        positions: ``(N, 2)`` patch centres, ``explain(x)["positions"][i]``.
        patch_size: Patch side ``p`` or ``(ph, pw)``.
        captions: Captions of the left and the right picture.
        gap: White pixels between the two.
        **overlay_arguments: Other `attention_overlay` arguments
            (``colormap``, ``box_color``, ...).

    Returns:
        An RGB ``uint8`` array ``(H, 2 W + gap, 3)``.

    Examples:
        >>> import numpy as np
        >>> picture = explanation_picture(
        ...     np.zeros((40, 60, 3), "uint8"), np.ones((4, 6)), [[20, 30]], 10,
        ...     captions=("true: FL", "predicted: FL (90%)"))
        >>> picture.shape
        (40, 128, 3)
    """
    left, right = (
        attention_overlay(
            image,
            attention,
            positions,
            patch_size,
            alpha=alpha,
            caption=caption,
            **overlay_arguments,
        )
        for alpha, caption in zip((0.0, 0.5), captions)
    )
    white = np.full((left.shape[0], int(gap), 3), 255, np.uint8)
    return np.concatenate([left, white, right], axis=1)


def sequence_picture(
    image,
    step_attention,
    positions,
    patch_size: int | Sequence[int],
    *,
    colormap: str | np.ndarray = "jet",
    box_color: Sequence[int] = (255, 255, 255),
    strip_height: int | None = None,
) -> np.ndarray:
    """A sequence of draws: numbered boxes, and the map of each step.

    The image with each drawn patch outlined and numbered in draw order
    (1 is the first draw), above a strip of thumbnails: the map draw `n`
    was made from, under the number `n`, each blended over the image by
    `attention_overlay`. For `AttentionSamplingModel.explain` with an
    `AutoregressiveSampler`: `step_attention` is `explain(...)
    ["step_attention"][i]`.

    Args:
        image: `(H, W, C)` image, as for `attention_overlay`.
        step_attention: `(N, h, w)` maps, one per draw, in draw order.
        positions: `(N, 2)` patch centres `(y, x)`, in draw order.
        patch_size: patch side `p` or `(ph, pw)`.
        colormap: colour map of the thumbnails; see `colormap_lut`.
        box_color: RGB of the outlines and numbers.
        strip_height: height of the thumbnails; default a quarter of the
            image's.

    Returns:
        An RGB `uint8` array.

    Examples:
        >>> import numpy as np
        >>> picture = sequence_picture(
        ...     np.zeros((64, 64, 3), "uint8"), np.ones((2, 8, 8)) / 64,
        ...     [[16, 16], [40, 48]], 16)
        >>> picture.shape[1], picture.shape[0] > 64
        (64, True)
    """
    caller = "sequence_picture"
    rgb = _image_to_rgb(image, caller)
    maps = _to_numpy(step_attention, "step_attention", caller)
    positions = _to_numpy(positions, "positions", caller)
    if maps.ndim != 3 or len(maps) != len(positions):
        raise ValueError(
            f"{caller}: step_attention must be (N, h, w) with one map per position; "
            f"got {maps.shape} for {len(positions)} positions."
        )
    height, width = rgb.shape[:2]
    top = attention_overlay(
        rgb, maps.mean(axis=0), positions, patch_size, alpha=0.0, box_color=box_color
    )
    picture = Image.fromarray(top)
    draw = ImageDraw.Draw(picture)
    font = _font(max(10, height // 20))
    sizes = np.asarray(patch_size).reshape(-1).astype(int).tolist()
    patch_h, patch_w = sizes * 2 if len(sizes) == 1 else sizes
    for number, position in enumerate(positions, start=1):
        extent = _box_extent(position, patch_h, patch_w, height, width)
        if extent is not None:
            draw.text(
                (extent[1] + 2, extent[0] + 1),
                str(number),
                fill=tuple(int(c) for c in box_color),
                font=font,
            )
    strip_height = strip_height or max(16, height // 4)
    thumb_width = max(1, round(strip_height * width / height))
    label_font = _font(max(10, strip_height // 5))
    strip = Image.new("RGB", (width, strip_height), (255, 255, 255))
    step = width / len(maps)
    for number, attention in enumerate(maps, start=1):
        thumb = Image.fromarray(attention_overlay(rgb, attention, colormap=colormap))
        thumb = thumb.resize((min(thumb_width, int(step) - 2), strip_height - 2))
        left = int((number - 1) * step) + 1
        strip.paste(thumb, (left, 1))
        ImageDraw.Draw(strip).text(
            (left + 2, 2), str(number), fill=(255, 255, 255), font=label_font
        )
    return np.concatenate([np.asarray(picture), np.asarray(strip)], axis=0)


def _boxes(positions, patch_size, box_color, box_width, image_shape):
    """Checked `(extent, colour, thickness)` of every patch inside the image."""
    caller = "attention_overlay"
    positions = _to_numpy(positions, "positions", caller).astype(np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(
            f"{caller}: positions must have shape (N, 2) as (y, x), got "
            f"{positions.shape}."
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
    boxes = []
    for position, colour in zip(positions, _to_uint8(colours)):
        extent = _box_extent(position, patch_h, patch_w, *image_shape)
        if extent is not None:
            top, left, bottom, right = extent
            # A box clipped thinner than the outline is drawn filled.
            thickness = min(int(box_width), bottom - top + 1, right - left + 1)
            boxes.append((extent, tuple(int(c) for c in colour), thickness))
    return boxes


def _draw_caption(picture, caption):
    width, height = picture.size
    margin = max(2, height // 100)
    draw = ImageDraw.Draw(picture, "RGBA")
    font = _fitted_font(draw, caption, max(12, height // 25), width - 2 * margin)
    left, top, right, bottom = draw.multiline_textbbox((0, 0), caption, font=font)
    band = min(height, bottom - top + 2 * margin)
    # Darken rather than replace, so the image stays faintly visible.
    draw.rectangle((0, height - band, width, height), fill=(0, 0, 0, 166))
    draw.multiline_text(
        (margin - left, height - band + margin - top),
        caption,
        fill=(255, 255, 255),
        font=font,
    )


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
    fill = tuple(int(c) for c in _to_uint8(np.asarray(background)).reshape(3))
    grid = Image.new("RGB", (ncols * cell_w + pad, nrows * cell_h + pad), fill)
    draw = ImageDraw.Draw(grid)
    for i in range(count):
        top = pad + (i // ncols) * cell_h
        left = pad + (i % ncols) * cell_w
        tile = Image.fromarray(tiles[i]).resize((tile_w, tile_h), Image.NEAREST)
        grid.paste(tile, (left, top))
        if texts is not None and texts[i]:
            font = _fitted_font(draw, texts[i], text_height, tile_w)
            draw.text((left, top + tile_h + 2), texts[i], fill=(0, 0, 0), font=font)
    return np.asarray(grid)


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
        >>> path = save_png(np.zeros((4, 5, 3), "uint8"),
        ...                 os.path.join(tmp.name, "out", "x.png"))
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
