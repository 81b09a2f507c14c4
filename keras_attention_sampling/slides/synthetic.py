"""Generated whole-slide images: tissue on glass, with small class evidence.

Written tile by tile as JPEG-tiled pyramidal BigTIFFs, so a slide of any
size is made without holding it in memory. Each slide has a few blobs of
pink tissue on white glass, and inside the tissue a few small discs of
evidence whose texture is the class: horizontal stripes, vertical stripes
or a checkerboard, each with the same mean colour. The pyramid levels are
rendered with each texture's mean, so the low-resolution view shows where
the evidence is but not what it is, and only full-resolution patches tell
the classes apart.
"""

import math
import os

import numpy as np

from keras_attention_sampling.slides.slide import _imports

CLASSES = ("horizontal", "vertical", "checkerboard")
_GLASS = np.array([242.0, 241.0, 238.0])
_TISSUE = np.array([226.0, 160.0, 200.0])
_DARK = np.array([95.0, 40.0, 120.0])
_LIGHT = np.array([215.0, 175.0, 215.0])


def _layout(rng, height, width, evidence_radius, n_evidence):
    """Tissue blobs and evidence discs, in level-0 pixels."""
    side = min(height, width)
    blobs = []
    for _ in range(int(rng.integers(2, 5))):
        sigma = side * rng.uniform(0.12, 0.22)
        centre = rng.uniform(0.2, 0.8, 2) * (height, width)
        blobs.append((centre[0], centre[1], sigma))
    discs = []
    for _ in range(n_evidence):
        cy, cx, sigma = blobs[int(rng.integers(len(blobs)))]
        offset = rng.normal(0, 0.4 * sigma, 2)
        discs.append((cy + offset[0], cx + offset[1], evidence_radius))
    return blobs, discs


def _distance(box, centre):
    """Distance from a point to a box `(y0, x0, y1, x1)` (0 inside)."""
    dy = max(box[0] - centre[0], 0.0, centre[0] - box[2])
    dx = max(box[1] - centre[1], 0.0, centre[1] - box[3])
    return math.hypot(dy, dx)


def render(layout, label, corner, shape, downsample=1.0, noise=None, period=8):
    """The pixels of one tile of a generated slide.

    Args:
        layout: `(blobs, discs)` of the slide.
        label: the class, the texture of the evidence.
        corner: `(y, x)` of the tile at its level.
        shape: `(h, w)` of the tile.
        downsample: level-0 pixels per pixel of the level.
        noise: `(h, w, 3)` noise added to the tile (none by default).
        period: the texture's period in level-0 pixels.

    Returns:
        `uint8` `(h, w, 3)`.
    """
    blobs, discs = layout
    box = (
        corner[0] * downsample,
        corner[1] * downsample,
        (corner[0] + shape[0]) * downsample,
        (corner[1] + shape[1]) * downsample,
    )
    # Far from every blob a tile is glass: the blobs end at 1.26 sigma.
    near = [b for b in blobs if _distance(box, b[:2]) < 1.3 * b[2]]
    pixels = np.broadcast_to(_GLASS, (*shape, 3))
    if near:
        ys = (corner[0] + np.arange(shape[0]) + 0.5) * downsample
        xs = (corner[1] + np.arange(shape[1]) + 0.5) * downsample
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        tissue = np.zeros(shape)
        for cy, cx, sigma in near:
            square = ((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)
            tissue = np.maximum(tissue, np.exp(-square))
        tissue = np.clip((tissue - 0.45) * 8, 0, 1)[..., None]
        pixels = _GLASS * (1 - tissue) + _TISSUE * tissue
        close = [d for d in discs if _distance(box, d[:2]) < d[2]]
        if close:
            if downsample * 2 < period:
                half = period / 2
                if label == 0:
                    dark = (yy // half) % 2 == 0
                elif label == 1:
                    dark = (xx // half) % 2 == 0
                else:
                    dark = ((yy // half) + (xx // half)) % 2 == 0
                texture = np.where(dark[..., None], _DARK, _LIGHT)
            else:  # finer than a pixel of this level: the texture's mean
                texture = (_DARK + _LIGHT) / 2
            for cy, cx, radius in close:
                inside = ((yy - cy) ** 2 + (xx - cx) ** 2) <= radius**2
                pixels = np.where(inside[..., None], texture, pixels)
    if noise is not None:
        pixels = pixels + noise
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_slide(
    path,
    label,
    shape,
    seed=0,
    tile=256,
    evidence_radius=48,
    n_evidence=3,
    levels=None,
    quality=90,
):
    """Writes one generated slide as a JPEG-tiled pyramidal BigTIFF.

    Args:
        path: the file to write.
        label: its class, 0..2 (`CLASSES`).
        shape: `(H, W)` at level 0.
        seed: seed of its layout and noise.
        tile: tile side.
        evidence_radius: radius of each evidence disc, level-0 pixels.
        n_evidence: evidence discs.
        levels: pyramid levels below level 0, each 4x smaller (by default
            until the level fits in 2048 pixels).
        quality: JPEG quality.

    Returns:
        `path`.
    """
    tifffile, _ = _imports(path)
    height, width = (int(v) for v in shape)
    rng = np.random.default_rng((seed, label))
    layout = _layout(rng, height, width, evidence_radius, n_evidence)
    if levels is None:
        levels = max(0, math.ceil(math.log(max(height, width) / 2048, 4)))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    # Noise from a bank of tiles, picked per tile: cheap at any size.
    bank = rng.normal(0, 6, (16, tile, tile, 3)).astype(np.float32)

    def tiles(level):
        downsample = 4**level
        h, w = math.ceil(height / downsample), math.ceil(width / downsample)
        for ty in range(0, h, tile):
            for tx in range(0, w, tile):
                noise = bank[(ty * 7919 + tx * 104729 + level) // tile % 16]
                yield render(layout, label, (ty, tx), (tile, tile), downsample, noise)

    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        options = dict(
            tile=(tile, tile),
            photometric="rgb",
            compression="jpeg",
            compressionargs={"level": quality},
            dtype="uint8",
        )
        writer.write(tiles(0), shape=(height, width, 3), subifds=levels, **options)
        for level in range(1, levels + 1):
            downsample = 4**level
            size = (math.ceil(height / downsample), math.ceil(width / downsample), 3)
            writer.write(tiles(level), shape=size, subfiletype=1, **options)
    return path


def write_slide_folder(folder, n_per_class=4, shape=(4096, 4096), seed=0, **kwargs):
    """Writes a folder of generated slides, one subfolder per class (the
    layout `index_slides` reads); slides already written are kept.

    Returns:
        The folder.
    """
    for label, name in enumerate(CLASSES):
        for i in range(n_per_class):
            path = os.path.join(folder, name, f"slide-{i:03d}.tif")
            if not os.path.exists(path):
                write_slide(
                    path + ".part", label, shape, seed=seed * 1000 + i, **kwargs
                )
                os.replace(path + ".part", path)
    return folder
