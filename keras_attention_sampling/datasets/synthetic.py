"""Procedural H&E-like images of three lymphoma-like classes.

The real IICBU lymphoma images cannot ship with the package, so tests and the
default example run on these. The classes differ *only* in cell morphology
inside a few "evidence" regions covering a minority of the image:

* ``CLL``: small, uniform, round nuclei scattered evenly;
* ``FL``: nuclei of mixed medium size packed into round follicle-like
  clusters, sparse between them;
* ``MCL``: medium, irregular (notched, elongated) nuclei in an even, dense
  sheet.

Nuclei are drawn into each evidence region until the same fraction of it is
covered, whatever the class, and the rest of the image (stroma texture,
fibres, empty gaps, scattered generic nuclei) comes from one class-agnostic
distribution. Stain colours vary between synthetic slides, not classes. The
evidence regions are easy to find at low resolution (they are dense with
nuclei), but nuclear size and shape only show at full resolution: the
situation attention sampling is built for.

Each image is generated from its own seed (derived from the global seed and
its index), so images can be produced lazily, in any order, in parallel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: Class names of the synthetic set, in label order.
SYNTHETIC_CLASS_NAMES = ("CLL", "FL", "MCL")

# Fraction of an evidence region covered by nuclei, identical for all classes
# so that the amount of purple carries no label information.
_EVIDENCE_COVERAGE = 0.42
# Fraction of the rest of the tissue covered by generic nuclei.
_BACKGROUND_COVERAGE = 0.07
# Vertices per nucleus outline polygon.
_VERTICES = 14

# Nucleus shape parameters per class, in pixels at cell_scale=1:
# (mean radius, radius std, max extra elongation, contour irregularity).
_MORPHOLOGY = {
    0: (3.8, 0.25, 0.08, 0.03),  # CLL: small, uniform, round
    1: (6.0, 1.1, 0.30, 0.08),  # FL: medium, mixed sizes
    2: (7.0, 0.9, 0.55, 0.20),  # MCL: medium, irregular, elongated
}
_GENERIC_MORPHOLOGY = (5.5, 1.6, 0.5, 0.12)
# A 3x3 binomial blur: softens the nuclei's pixel-sharp edges at a fraction
# of the cost of Pillow's GaussianBlur.
_BLUR = ImageFilter.Kernel((3, 3), (1, 2, 1, 2, 4, 2, 1, 2, 1), scale=16)


# eq=False: the fields hold numpy arrays, which have no single truth value.
@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticSample:
    """One generated image with the ground truth used to make it.

    Attributes:
        image: ``uint8`` RGB image ``(H, W, 3)``.
        label: Class index into `SYNTHETIC_CLASS_NAMES`.
        group: Id of the synthetic slide the image belongs to.
        evidence_mask: ``bool`` array ``(H, W)``, True inside the evidence
            regions (where the class-specific cells are).
        regions: ``float32`` array ``(K, 3)`` of evidence discs
            ``(centre_y, centre_x, radius)`` in pixels.

    Examples:
        >>> sample = SyntheticLymphoma(1, image_size=(64, 80), seed=0).generate(0)
        >>> sample.image.shape, sample.evidence_mask.shape, sample.regions.shape[1]
        ((64, 80, 3), (64, 80), 3)
    """

    image: np.ndarray
    label: int
    group: str
    evidence_mask: np.ndarray
    regions: np.ndarray


@dataclasses.dataclass(frozen=True)
class _SlideStyle:
    stroma: np.ndarray  # RGB of eosin-stained stroma
    fibre: np.ndarray  # RGB of denser collagen fibres
    nucleus_light: np.ndarray  # RGB of weakly stained chromatin
    nucleus_dark: np.ndarray  # RGB of nuclear rims / dense chromatin
    brightness: float


class SyntheticLymphoma:
    """A lazy, deterministic source of synthetic lymphoma-like images.

    Images are generated on demand by `load_image` / `generate`;
    nothing is cached. Labels are class-major (all ``CLL``, then ``FL``,
    then ``MCL``) and consecutive images of a class are grouped into slides
    of ``images_per_slide`` images that share a stain style, mimicking
    several fields of view per patient slide. Pass an instance to
    `ImageSequence` to stream it.

    A 1040x1388 image takes about 0.1-0.4 s on one CPU core.

    Args:
        n_per_class: Images per class.
        image_size: ``(height, width)``; defaults to the IICBU size.
        seed: Global seed. Image ``i`` depends only on ``(seed, i)`` and its
            slide's style only on ``(seed, slide)``.
        evidence_fraction: Fraction of the image area covered by the
            class-specific evidence regions, in ``(0, 0.9]``. Large values are
            capped at one disc of radius ``0.45 * min(height, width)``.
        images_per_slide: Images per synthetic slide (group).
        cell_scale: Multiplies all cell sizes (nuclei are about 4-7 px in
            radius at 1.0, close to the IICBU images).
        n_regions: Inclusive ``(min, max)`` number of evidence discs per image.

    Examples:
        >>> source = SyntheticLymphoma(n_per_class=4, image_size=(96, 128), seed=0,
        ...                            images_per_slide=2, cell_scale=0.5)
        >>> len(source), source.class_names
        (12, ('CLL', 'FL', 'MCL'))
        >>> source.labels.tolist()[:5], source.groups.tolist()[:3]
        ([0, 0, 0, 0, 1], ['syn-CLL-00', 'syn-CLL-00', 'syn-CLL-01'])
        >>> image = source.load_image(5)
        >>> image.shape, image.dtype.name
        ((96, 128, 3), 'uint8')
        >>> bool((image == source.load_image(5)).all())
        True
    """

    def __init__(
        self,
        n_per_class: int = 10,
        image_size: Sequence[int] = (1040, 1388),
        *,
        seed: int = 0,
        evidence_fraction: float = 0.15,
        images_per_slide: int = 4,
        cell_scale: float = 1.0,
        n_regions: Sequence[int] = (1, 3),
    ):
        if int(n_per_class) <= 0:
            raise ValueError(
                f"SyntheticLymphoma: n_per_class must be positive, got {n_per_class}."
            )
        if len(image_size) != 2 or min(image_size) < 16:
            raise ValueError(
                "SyntheticLymphoma: image_size must be (height, width) with both "
                f">= 16, got {image_size}."
            )
        if not 0.0 < evidence_fraction <= 0.9:
            raise ValueError(
                "SyntheticLymphoma: evidence_fraction must be in (0, 0.9], got "
                f"{evidence_fraction}."
            )
        if int(images_per_slide) <= 0:
            raise ValueError(
                "SyntheticLymphoma: images_per_slide must be positive, got "
                f"{images_per_slide}."
            )
        if cell_scale <= 0:
            raise ValueError(
                f"SyntheticLymphoma: cell_scale must be > 0, got {cell_scale}."
            )
        if len(n_regions) != 2 or not 1 <= n_regions[0] <= n_regions[1]:
            raise ValueError(
                f"SyntheticLymphoma: n_regions must be (min, max) with 1 <= min <= max, "
                f"got {n_regions}."
            )
        if int(seed) < 0:
            raise ValueError(f"SyntheticLymphoma: seed must be >= 0, got {seed}.")
        self.n_per_class = int(n_per_class)
        self.size = (int(image_size[0]), int(image_size[1]))
        self.seed = int(seed)
        self.evidence_fraction = float(evidence_fraction)
        self.images_per_slide = int(images_per_slide)
        self.cell_scale = float(cell_scale)
        self.n_regions = (int(n_regions[0]), int(n_regions[1]))
        self.class_names = SYNTHETIC_CLASS_NAMES

        n_classes = len(self.class_names)
        within = np.arange(self.n_per_class) // self.images_per_slide
        slides_per_class = int(within.max()) + 1
        self.labels = np.repeat(np.arange(n_classes, dtype=np.int32), self.n_per_class)
        # Global slide number: unique across classes, used to seed the style.
        self._slide = (
            self.labels * slides_per_class + np.tile(within, n_classes)
        ).astype(np.int64)
        self.groups = np.asarray(
            [
                f"syn-{self.class_names[label]}-{local:02d}"
                for label, local in zip(self.labels, np.tile(within, n_classes))
            ],
            dtype=str,
        )

    def __len__(self) -> int:
        return len(self.labels)

    def image_size(self, index: int) -> tuple[int, int]:
        """Return ``(height, width)`` (the same for every image).

        Args:
            index: Image position (checked, otherwise unused).

        Returns:
            ``(height, width)``.

        Examples:
            >>> SyntheticLymphoma(1, image_size=(32, 48)).image_size(0)
            (32, 48)
        """
        self._check_index(index)
        return self.size

    def load_image(self, index: int) -> np.ndarray:
        """Generate image ``index`` as ``uint8`` ``(H, W, 3)``.

        Args:
            index: Image position in ``[0, len(self))``.

        Returns:
            The image.

        Examples:
            >>> SyntheticLymphoma(1, image_size=(32, 48)).load_image(2).shape
            (32, 48, 3)
        """
        return self.generate(index).image

    def generate(self, index: int) -> SyntheticSample:
        """Generate image ``index`` together with its evidence ground truth.

        Args:
            index: Image position in ``[0, len(self))``.

        Returns:
            A `SyntheticSample`.

        Raises:
            IndexError: If ``index`` is out of range.

        Examples:
            >>> sample = SyntheticLymphoma(2, image_size=(64, 64), seed=3).generate(4)
            >>> sample.label, sample.group
            (2, 'syn-MCL-00')
            >>> bool(0.05 < sample.evidence_mask.mean() < 0.3)
            True
        """
        index = self._check_index(index)
        label = int(self.labels[index])
        # Independent streams: (0, slide) for the slide's stain style,
        # (1, index) for everything else in this image.
        slide_seed = np.random.SeedSequence(
            self.seed, spawn_key=(0, int(self._slide[index]))
        )
        style = _slide_style(np.random.default_rng(slide_seed))
        rng = np.random.default_rng(
            np.random.SeedSequence(self.seed, spawn_key=(1, index))
        )
        image, mask, regions = _render(
            rng,
            style,
            label,
            self.size,
            self.evidence_fraction,
            self.cell_scale,
            self.n_regions,
        )
        return SyntheticSample(image, label, str(self.groups[index]), mask, regions)

    def _check_index(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(
                f"SyntheticLymphoma: index {index} out of range for {len(self)} images."
            )
        return index


def make_synthetic_lymphoma(
    n_per_class: int = 10,
    image_size: Sequence[int] = (1040, 1388),
    *,
    seed: int = 0,
    evidence_fraction: float = 0.15,
    images_per_slide: int = 4,
    cell_scale: float = 1.0,
) -> dict[str, np.ndarray | tuple[str, ...]]:
    """Generate a whole synthetic dataset in memory.

    Convenient for small sets (tests, notebooks). For large ones, stream a
    `SyntheticLymphoma` through
    `ImageSequence` instead: 100
    full-size images take 430 MB here.

    Args:
        n_per_class: Images per class.
        image_size: ``(height, width)``.
        seed: Global seed.
        evidence_fraction: Fraction of the image covered by evidence regions.
        images_per_slide: Images per synthetic slide (group).
        cell_scale: Multiplies all cell sizes.

    Returns:
        A dict with ``images`` (``uint8``, ``(N, H, W, 3)``), ``labels``
        (``int32``, ``(N,)``), ``class_names`` (tuple), ``groups`` (str,
        ``(N,)``) and ``evidence_masks`` (``bool``, ``(N, H, W)``).

    Examples:
        >>> data = make_synthetic_lymphoma(2, image_size=(32, 40), seed=0)
        >>> data["images"].shape, data["labels"].tolist(), data["class_names"]
        ((6, 32, 40, 3), [0, 0, 1, 1, 2, 2], ('CLL', 'FL', 'MCL'))
    """
    source = SyntheticLymphoma(
        n_per_class,
        image_size,
        seed=seed,
        evidence_fraction=evidence_fraction,
        images_per_slide=images_per_slide,
        cell_scale=cell_scale,
    )
    height, width = source.size
    images = np.empty((len(source), height, width, 3), dtype=np.uint8)
    masks = np.empty((len(source), height, width), dtype=bool)
    for i in range(len(source)):
        sample = source.generate(i)
        images[i], masks[i] = sample.image, sample.evidence_mask
    return {
        "images": images,
        "labels": source.labels.copy(),
        "class_names": source.class_names,
        "groups": source.groups.copy(),
        "evidence_masks": masks,
    }


# --------------------------------------------------------------------------
# Rendering. Everything is vectorised numpy except one Pillow call per nucleus
# (a C-level polygon fill), which keeps a full-size image well under a second.
# --------------------------------------------------------------------------


def _slide_style(rng: np.random.Generator) -> _SlideStyle:
    # Stain batches differ in hue and intensity; drawn independently of the
    # class so colour alone cannot identify it.
    eosin_shift = rng.normal(0.0, 1.0, 3) * np.array([6.0, 10.0, 8.0])
    hema_shift = rng.normal(0.0, 1.0, 3) * np.array([14.0, 10.0, 14.0])
    stroma = np.array([233.0, 172.0, 205.0]) + eosin_shift
    return _SlideStyle(
        stroma=stroma,
        fibre=stroma * np.array([0.88, 0.72, 0.82]),
        nucleus_light=np.array([150.0, 110.0, 185.0]) + hema_shift,
        nucleus_dark=np.array([60.0, 35.0, 110.0]) + 0.6 * hema_shift,
        brightness=float(rng.uniform(0.94, 1.04)),
    )


def _smooth_noise(rng, size, cells):
    """Zero-mean, roughly unit-variance noise varying over ``cells`` pixels."""
    height, width = size
    grid_h = max(2, int(round(height / cells)))
    grid_w = max(2, int(round(width / cells)))
    coarse = rng.standard_normal((grid_h, grid_w)).astype(np.float32)
    field = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    return np.asarray(field, dtype=np.float32)


def _upsample(field, size):
    """Bilinear upsampling of a float32 field to ``size = (height, width)``."""
    image = Image.fromarray(np.ascontiguousarray(field, dtype=np.float32))
    return np.asarray(
        image.resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32
    )


def _place_regions(rng, size, fraction, n_range, cell_scale):
    """Random non-overlapping evidence discs covering ``fraction`` of the image."""
    height, width = size
    count = int(rng.integers(n_range[0], n_range[1] + 1))
    # Unequal shares so regions differ in size, but none is tiny.
    shares = rng.dirichlet(np.full(count, 3.0))
    radii = np.sqrt(shares * fraction * height * width / np.pi)
    max_radius = 0.45 * min(height, width)
    if radii.max() > max_radius:  # too large to fit: fall back to one big disc
        radii = np.array([min(max_radius, np.sqrt(fraction * height * width / np.pi))])
    radii = np.maximum(radii, 3.0 * cell_scale)
    centres = []
    for radius in radii:
        best = None
        for _ in range(200):  # rejection sampling; almost always succeeds fast
            cy = rng.uniform(radius, height - radius)
            cx = rng.uniform(radius, width - radius)
            clear = all(
                np.hypot(cy - oy, cx - ox) >= radius + orad + 2
                for oy, ox, orad in centres
            )
            best = (cy, cx, radius)
            if clear:
                break
        centres.append(best)
    return np.asarray(centres, dtype=np.float32)


def _disc_mask(size, regions):
    height, width = size
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    mask = np.zeros(size, dtype=bool)
    for cy, cx, radius in regions:
        top, bottom = max(0, int(cy - radius)), min(height, int(cy + radius) + 2)
        left, right = max(0, int(cx - radius)), min(width, int(cx + radius) + 2)
        mask[top:bottom, left:right] |= (yy[top:bottom] - cy) ** 2 + (
            xx[:, left:right] - cx
        ) ** 2 <= radius**2
    return mask


def _uniform_in_disc(rng, n, cy, cx, radius):
    r = radius * np.sqrt(rng.random(n))
    theta = rng.uniform(0, 2 * np.pi, n)
    return np.stack([cy + r * np.sin(theta), cx + r * np.cos(theta)], axis=1)


def _nucleus_radii(rng, n, morphology, cell_scale):
    mean, std, _, _ = morphology
    return np.clip(rng.normal(mean, std, n), 0.5 * mean, 1.8 * mean) * cell_scale


def _evidence_candidates(rng, label, cy, cx, radius, cell_scale):
    """Candidate nucleus centres ``(n, 2)`` for one evidence disc, in the
    order they should be drawn (more than will be needed)."""
    area = np.pi * radius**2
    mean_area = np.pi * (_MORPHOLOGY[label][0] * cell_scale) ** 2
    expected = max(4, int(round(_EVIDENCE_COVERAGE * area / mean_area)))
    if label == 0:  # CLL: even scatter (Poisson)
        return _uniform_in_disc(rng, 3 * expected, cy, cx, radius)
    if label == 1:  # FL: follicles packed with nuclei, sparse between them
        follicle_r = min(24.0 * cell_scale, 0.55 * radius)
        n_follicles = max(1, int(round(0.35 * area / (np.pi * follicle_r**2))))
        follicles = _uniform_in_disc(
            rng, n_follicles, cy, cx, max(0.0, radius - follicle_r)
        )
        n = 5 * expected
        in_follicle = rng.random(n) < 0.85
        points = _uniform_in_disc(rng, n, cy, cx, radius)
        which = rng.integers(0, n_follicles, n)
        offsets = _uniform_in_disc(rng, n, 0.0, 0.0, follicle_r)
        points[in_follicle] = follicles[which[in_follicle]] + offsets[in_follicle]
        return points
    # MCL: an even sheet. A jittered grid spaced for the target coverage
    # (nuclei barely overlap), then a half-offset grid in case more is needed.
    spacing = np.sqrt(area / expected)
    layers = []
    for shift in (0.0, 0.5 * spacing):
        ys = np.arange(cy - radius + shift, cy + radius + spacing, spacing)
        xs = np.arange(cx - radius + shift, cx + radius + spacing, spacing)
        grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
        grid = grid + rng.uniform(-0.3, 0.3, grid.shape) * spacing
        grid = grid[np.hypot(grid[:, 0] - cy, grid[:, 1] - cx) <= radius]
        layers.append(rng.permutation(grid))
    return np.concatenate(layers)


def _draw_evidence(layer_image, rng, label, regions, mask, cell_scale, rim_width):
    """Draw class-specific nuclei into each evidence disc until a fixed
    fraction of the disc is covered.

    Stopping at a measured coverage, rather than after a fixed count, makes
    the amount of nuclear stain identical across classes even though
    clustered (FL) nuclei overlap far more than a sheet (MCL) of them.
    """
    layer = ImageDraw.Draw(layer_image)
    morphology = _MORPHOLOGY[label]
    height, width = mask.shape
    for cy, cx, radius in regions:
        centres = _evidence_candidates(rng, label, cy, cx, radius, cell_scale)
        radii = _nucleus_radii(rng, len(centres), morphology, cell_scale)
        polygons = _nucleus_polygons(rng, centres, radii, morphology)
        top, bottom = max(0, int(cy - radius)), min(height, int(cy + radius) + 2)
        left, right = max(0, int(cx - radius)), min(width, int(cx + radius) + 2)
        disc = mask[top:bottom, left:right]
        mean_area = np.pi * (morphology[0] * cell_scale) ** 2
        # Draw most of the expected count at once, then small steps.
        first = int(0.8 * _EVIDENCE_COVERAGE * disc.sum() / mean_area)
        step = max(1, first // 25)
        start, stop = 0, max(1, first)
        while start < len(polygons):
            _draw_nuclei(layer, rng, polygons[start:stop], rim_width)
            covered = np.asarray(layer_image.crop((left, top, right, bottom)))[disc]
            if np.count_nonzero(covered) >= _EVIDENCE_COVERAGE * covered.size:
                break
            start, stop = stop, stop + step


def _background_nuclei(rng, size, mask, cell_scale):
    height, width = size
    mean_area = np.pi * (_GENERIC_MORPHOLOGY[0] * cell_scale) ** 2
    n = int(round(_BACKGROUND_COVERAGE * height * width / mean_area))
    points = rng.uniform((0, 0), (height, width), (n, 2))
    rows = np.clip(points[:, 0].astype(int), 0, height - 1)
    cols = np.clip(points[:, 1].astype(int), 0, width - 1)
    points = points[~mask[rows, cols]]  # evidence regions hold only class cells
    return points, _nucleus_radii(rng, len(points), _GENERIC_MORPHOLOGY, cell_scale)


def _nucleus_polygons(rng, centres, radii, morphology):
    """Outline vertices ``(n, V, 2)`` as (x, y): rotated, elongated, bumpy."""
    _, _, elongation, irregularity = morphology
    n = len(centres)
    angles = np.linspace(0, 2 * np.pi, _VERTICES, endpoint=False)[None, :]
    stretch = 1.0 + rng.uniform(0, elongation, (n, 1))
    tilt = rng.uniform(0, np.pi, (n, 1))
    # Ellipse radius at each angle, area kept at pi * r^2.
    a, b = radii[:, None] * np.sqrt(stretch), radii[:, None] / np.sqrt(stretch)
    rel = angles - tilt
    rho = a * b / np.sqrt((b * np.cos(rel)) ** 2 + (a * np.sin(rel)) ** 2)
    # Smooth bumps and notches: a few low harmonics with random phases.
    bumps = np.zeros_like(rho)
    for k in (2, 3, 5):
        amplitude = rng.normal(0, irregularity / k, (n, 1))
        phase = rng.uniform(0, 2 * np.pi, (n, 1))
        bumps += amplitude * np.cos(k * angles + phase)
    rho = rho * np.clip(1.0 + bumps, 0.6, 1.4)
    xs = centres[:, 1:2] + rho * np.cos(angles)
    ys = centres[:, 0:1] + rho * np.sin(angles)
    return np.stack([xs, ys], axis=-1)


def _draw_nuclei(layer: ImageDraw.ImageDraw, rng, polygons, rim_width):
    # Layer value 0 = no nucleus, else stain strength. The rim is darker
    # than the body by a fixed step rather than uniformly black, so the
    # share of very dark pixels does not reveal the nucleus size.
    if len(polygons) == 0:
        return
    bodies = rng.integers(70, 170, len(polygons))
    for outline, body in zip(
        polygons.reshape(len(polygons), -1).tolist(), bodies.tolist()
    ):
        layer.polygon(outline, fill=body, outline=body + 70, width=rim_width)


def _render(rng, style, label, size, fraction, cell_scale, n_regions):
    height, width = size
    regions = _place_regions(rng, size, fraction, n_regions, cell_scale)
    mask = _disc_mask(size, regions)

    # The image is a per-pixel mix of five colours: stroma, fibre, pale gap,
    # light and dark nuclear stain. The five weights are computed as
    # full-resolution planes and mixed by one matrix product, which is much
    # faster than blending RGB arrays step by step. Smooth fields are
    # computed at a quarter of the resolution and upsampled once.
    weights = np.empty((5, height, width), dtype=np.float32)
    stroma_w, fibre_w, gap_w, light_w, dark_w = weights
    low = (max(2, height // 4), max(2, width // 4))

    # 1. Stroma brightness: two scales of smooth noise.
    texture = 0.7 * _smooth_noise(rng, low, 90.0 * cell_scale / 4)
    texture += 0.5 * _smooth_noise(rng, low, 14.0 * cell_scale / 4)
    stroma_w[:] = _upsample(1.0 + 0.045 * texture, size)

    # 2. Collagen fibres: thin wavy darker-pink lines.
    fibres = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(fibres)
    n_fibres = max(2, int(height * width / (9000.0 * cell_scale**2)))
    steps = 8
    start = rng.uniform((0, 0), (width, height), (n_fibres, 2))
    heading = rng.uniform(0, 2 * np.pi, (n_fibres, 1)) + np.cumsum(
        rng.normal(0, 0.35, (n_fibres, steps)), axis=1
    )
    seg = 7.0 * cell_scale
    path = start[:, None, :] + np.cumsum(
        seg * np.stack([np.cos(heading), np.sin(heading)], -1), axis=1
    )
    strengths = rng.integers(60, 200, n_fibres).tolist()
    line_width = max(1, int(round(1.2 * cell_scale)))
    for points, strength in zip(path.reshape(n_fibres, -1).tolist(), strengths):
        draw.line(points, fill=strength, width=line_width)
    np.multiply(np.asarray(fibres), np.float32(1.0 / 255.0), out=fibre_w)
    stroma_w *= 1.0 - fibre_w

    # 3. Empty gaps (vessel lumina, tears): pale blobs where slow noise peaks,
    #    fading out towards the evidence regions, which stay fully cellular
    #    (a hard cut would outline the regions).
    gaps = np.clip(
        (_smooth_noise(rng, low, 160.0 * cell_scale / 4) - 1.3) * 2.0, 0.0, 0.85
    )
    ys = (np.arange(low[0], dtype=np.float32)[:, None] + 0.5) * (height / low[0])
    xs = (np.arange(low[1], dtype=np.float32)[None, :] + 0.5) * (width / low[1])
    edge_distance = np.min(
        [np.hypot(ys - cy, xs - cx) - radius for cy, cx, radius in regions], axis=0
    )
    gaps *= np.clip(edge_distance / (15.0 * cell_scale), 0.0, 1.0)
    gap_w[:] = _upsample(gaps, size)
    keep = 1.0 - gap_w
    stroma_w *= keep
    fibre_w *= keep

    # 4. Nuclei: generic ones everywhere outside the evidence, class-specific
    #    ones inside, drawn into one stain-strength layer. A blurred copy of
    #    its footprint is the nuclei's opacity, so their edges blend softly.
    layer_image = Image.new("L", (width, height), 0)
    layer = ImageDraw.Draw(layer_image)
    rim = max(1, int(round(1.0 * cell_scale)))
    centres, radii = _background_nuclei(rng, size, mask, cell_scale)
    _draw_nuclei(
        layer, rng, _nucleus_polygons(rng, centres, radii, _GENERIC_MORPHOLOGY), rim
    )
    _draw_evidence(layer_image, rng, label, regions, mask, cell_scale, rim)
    footprint = layer_image.point(lambda v: 255 if v else 0).filter(_BLUR)
    opacity = np.asarray(footprint, dtype=np.float32) * np.float32(1.0 / 255.0)
    np.multiply(np.asarray(layer_image), np.float32(1.0 / 255.0), out=dark_w)
    np.multiply(opacity, 1.0 - dark_w, out=light_w)
    dark_w *= opacity
    keep = 1.0 - opacity
    stroma_w *= keep
    fibre_w *= keep
    gap_w *= keep

    colours = np.stack(
        [
            style.stroma,
            style.fibre,
            np.full(3, 244.0),
            style.nucleus_light,
            style.nucleus_dark,
        ]
    ).astype(np.float32) * np.float32(style.brightness)
    # (3, 5) x (5, N): one BLAS call over contiguous planes.
    planes = (colours.T @ weights.reshape(5, -1)).reshape(3, height, width)

    # 5. Grain: sensor noise everywhere, stronger inside nuclei (chromatin).
    #    Uniform noise is cheaper to draw than Gaussian and looks the same.
    noise = rng.random((height, width), dtype=np.float32) - np.float32(0.5)
    noise *= np.float32(10.0) + np.float32(20.0) * opacity
    planes += noise
    np.clip(planes, 0, 255, out=planes)
    image = np.stack(list(planes.astype(np.uint8)), axis=-1)
    return image, mask, regions
