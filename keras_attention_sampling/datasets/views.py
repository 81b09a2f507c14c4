"""Low-resolution views made on the host, outside the training step.

`AttentionSamplingModel` downsamples inside the step by default, which reads
every pixel of every image once per step. A loader can make the view instead,
in parallel with training: Pillow's `Image.reduce` averages `uint8` boxes in
C, and a whole-slide reader can return a pyramid level directly. The model
takes the result as `{"images": images, "view": view}`.
"""

import numpy as np
from PIL import Image


def low_resolution_view(images, scale):
    """Average-pools `uint8` images by `scale` on the host.

    The same boxes as `kas.sampling.downsample` (`"valid"` pooling: the last
    `H mod scale` rows and `W mod scale` columns are dropped), rounded to
    `uint8`, so the view differs from the in-model one by at most 0.5 grey
    levels.

    Args:
        images: `(B, H, W, C)` or `(H, W, C)` `uint8` array.
        scale: positive int.

    Returns:
        `uint8` array `(B, H // scale, W // scale, C)` (or without `B`).

    Examples:
        >>> import numpy as np
        >>> images = np.zeros((2, 40, 60, 3), "uint8")
        >>> low_resolution_view(images, 10).shape
        (2, 4, 6, 3)
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(
            f"low_resolution_view: images must be uint8, got {images.dtype}."
        )
    if int(scale) != scale or scale < 1:
        raise ValueError(
            f"low_resolution_view: scale must be a positive int, got {scale}."
        )
    scale = int(scale)
    if images.ndim == 3:
        return low_resolution_view(images[None], scale)[0]
    if images.ndim != 4:
        raise ValueError(
            "low_resolution_view: expected (B, H, W, C) or (H, W, C) images, "
            f"got shape {images.shape}."
        )
    batch, height, width, channels = images.shape
    rows, cols = height // scale, width // scale
    if rows == 0 or cols == 0:
        raise ValueError(
            f"low_resolution_view: images of {height}x{width} are smaller than "
            f"the scale {scale}."
        )
    out = np.empty((batch, rows, cols, channels), np.uint8)
    for b in range(batch):
        for c in range(channels):
            # Channel by channel as mode "L": measured faster than Pillow's
            # "RGB" reduce, and "RGBA" would weight colour by alpha.
            plane = Image.fromarray(np.ascontiguousarray(images[b, :, :, c]))
            plane = plane.crop((0, 0, cols * scale, rows * scale))
            out[b, :, :, c] = np.asarray(plane.reduce(scale))
    return out


def with_views(images, scale):
    """`{"images": images, "view": low_resolution_view(images, scale)}`.

    The input form of `AttentionSamplingModel` that skips the in-step
    downsampling.

    Args:
        images: `(B, H, W, C)` `uint8` array.
        scale: positive int.

    Returns:
        Dict of `images` (unchanged) and `view`.
    """
    return {"images": images, "view": low_resolution_view(images, scale)}
