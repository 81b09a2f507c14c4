"""Textured needles: evidence the view can locate but not read."""

import numpy as np

NEEDLE_CLASSES = ("horizontal stripes", "vertical stripes", "checkerboard")


def textured_needles(n, image_size=96, needle_size=12, seed=0):
    """Noise images with one small dark patch whose texture is the class.

    Each `uint8` RGB image is uniform noise in `[96, 224]` with one
    `needle_size` square patch, the needle, of 2-pixel-period texture between
    16 and 112: horizontal stripes (class 0), vertical stripes (1) or a
    checkerboard (2). Every class has the same mean, so a view downsampled by
    an even factor shows *where* the needle is (a dark spot) but not *what*
    it is: only a full-resolution patch tells the class. A small task for
    checking that a model learns where to look.

    Args:
        n: number of images.
        image_size: side of the square images.
        needle_size: side of the needle.
        seed: seed of the images, labels and positions.

    Returns:
        Tuple `(images, labels, corners)`: `uint8` `(n, image_size,
        image_size, 3)`, `int` `(n,)` and the needle's top-left corner
        `(n, 2)`.

    Examples:
        >>> images, labels, corners = textured_needles(4, seed=0)
        >>> images.shape, images.dtype.name, labels.shape
        ((4, 96, 96, 3), 'uint8', (4,))
        >>> top, left = corners[0]
        >>> int(images[0, top:top + 12, left:left + 12].mean())  # half 16, half 112
        64
    """
    if needle_size % 2 or not 0 < needle_size <= image_size:
        raise ValueError(
            "textured_needles: needle_size must be even and fit in the image. "
            f"Received: needle_size={needle_size}, image_size={image_size}"
        )
    rng = np.random.default_rng(seed)
    images = rng.integers(96, 225, (n, image_size, image_size, 3)).astype(np.uint8)
    labels = rng.integers(0, len(NEEDLE_CLASSES), n)
    corners = rng.integers(0, image_size - needle_size + 1, (n, 2))
    rows, cols = np.mgrid[:needle_size, :needle_size]
    textures = np.stack([rows % 2, cols % 2, (rows + cols) % 2])
    for image, label, (top, left) in zip(images, labels, corners):
        patch = (16 + 96 * textures[label]).astype(np.uint8)
        image[top : top + needle_size, left : left + needle_size] = patch[..., None]
    return images, labels, corners


def needle_pairs(n, image_size=96, needle_size=12, seed=0):
    """Two needles far apart; the class is whether their textures agree.

    Each image is `textured_needles`' noise with two needles, one in the
    left third and one in the right third, each of horizontal or vertical
    stripes. The label is 0 when both show the same texture and 1 when they
    differ, so no single patch can tell the class: a useful pair of patches
    needs one from each needle.

    Args:
        n: number of images.
        image_size: side of the square images (at least 3 needles wide).
        needle_size: side of each needle (even).
        seed: seed of the images, labels and positions.

    Returns:
        Tuple `(images, labels, corners)`: `uint8` `(n, image_size,
        image_size, 3)`, `int` `(n,)` and the needles' top-left corners
        `(n, 2, 2)` (left needle first).

    Examples:
        >>> images, labels, corners = needle_pairs(4, seed=0)
        >>> images.shape, sorted(set(labels.tolist())) <= [0, 1], corners.shape
        ((4, 96, 96, 3), True, (4, 2, 2))
    """
    if needle_size % 2 or 3 * needle_size > image_size:
        raise ValueError(
            "needle_pairs: needle_size must be even and a third of the image at "
            f"most. Received: needle_size={needle_size}, image_size={image_size}"
        )
    rng = np.random.default_rng(seed)
    images = rng.integers(96, 225, (n, image_size, image_size, 3)).astype(np.uint8)
    textures = rng.integers(0, 2, (n, 2))  # 0: horizontal, 1: vertical stripes
    third = image_size // 3
    tops = rng.integers(0, image_size - needle_size + 1, (n, 2))
    lefts = np.stack(
        [
            rng.integers(0, third - needle_size + 1, n),
            rng.integers(2 * third, image_size - needle_size + 1, n),
        ],
        axis=1,
    )
    rows, cols = np.mgrid[:needle_size, :needle_size]
    stripes = np.stack([rows % 2, cols % 2])
    for image, kinds, top, left in zip(images, textures, tops, lefts):
        for kind, y, x in zip(kinds, top, left):
            patch = (16 + 96 * stripes[kind]).astype(np.uint8)
            image[y : y + needle_size, x : x + needle_size] = patch[..., None]
    labels = (textures[:, 0] != textures[:, 1]).astype(int)
    return images, labels, np.stack([tops, lefts], axis=-1)
