"""Host-side (numpy) augmentation of uint8 image batches.

Augmenting on the host, before images become tensors, keeps the model's
graph free of augmentation layers, works identically on every Keras backend,
and lets a random crop shrink megapixel images *before* they are copied to
the device. Every random draw comes from a ``numpy.random.Generator`` so a
batch is reproducible from a seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


def _reflect_indices(coords: np.ndarray, size: int) -> np.ndarray:
    """Map integer coordinates into ``[0, size)`` by mirroring at the edges.

    Matches Keras' ``fill_mode="reflect"``: ``(d c b a | a b c d | d c b a)``.
    """
    period = 2 * size
    coords = np.mod(coords, period)
    return np.where(coords >= size, period - 1 - coords, coords)


@dataclasses.dataclass(frozen=True)
class Augment:
    """Random geometric and colour augmentation for ``uint8`` image batches.

    Operations run in this order, each only when enabled:

    1. ``zoom``: zoom factor ``z ~ U(zoom)`` with Keras ``RandomZoom``
       conventions: ``z > 0`` zooms *out* (the view covers ``1 + z`` times the
       image, the border is filled by reflection), ``z < 0`` zooms in. Same
       factor on both axes, nearest-neighbour resampling.
    2. ``crop_size``: a random ``(height, width)`` crop, uniform over offsets.
    3. ``horizontal_flip`` / ``vertical_flip``: each with probability 1/2.
    4. ``rotate90``: a random multiple of 90 degrees. Quarter turns swap
       height and width, so they are used only when the (cropped) image is
       square; otherwise only 0 or 180 degrees are drawn, which keeps every
       batch the same shape. (Crop to a square first to get all four.)
    5. ``contrast``: per image, ``x' = (x - mean) * f + mean`` with
       ``f ~ U(contrast)`` and the per-channel mean of that image.
       ``keras.layers.RandomContrast(factor=(a, b))`` draws
       ``f ~ U(1 - a, 1 + b)``, so ``RandomContrast((0.99, 0.999))``
       corresponds to ``contrast=(0.01, 1.999)``.
    6. ``brightness``: per image, add ``d * 255`` with ``d ~ U(-b, b)``.
    7. ``channel_gain``: per image and channel, multiply by
       ``g ~ U(1 - s, 1 + s)``: a cheap stain/hue jitter.

    Results are clipped to ``[0, 255]`` and returned as ``uint8``.

    Args:
        crop_size: ``(height, width)`` of a random crop, or ``None``.
        horizontal_flip: Randomly mirror left-right.
        vertical_flip: Randomly mirror top-bottom.
        rotate90: Randomly rotate by multiples of 90 degrees (see above).
        zoom: ``(low, high)`` zoom factor range, or ``None``.
        contrast: ``(low, high)`` contrast factor range, or ``None``.
        brightness: Maximum brightness shift as a fraction of 255.
        channel_gain: Maximum relative per-channel gain deviation.

    Examples:
        >>> import numpy as np
        >>> augment = Augment(crop_size=(4, 4), horizontal_flip=True, rotate90=True,
        ...                   contrast=(0.9, 1.1), brightness=0.05)
        >>> batch = np.zeros((2, 6, 8, 3), dtype="uint8")
        >>> out = augment(batch, rng=0)
        >>> out.shape, out.dtype.name
        ((2, 4, 4, 3), 'uint8')
        >>> augment.output_size((6, 8))
        (4, 4)
        >>> bool((augment(batch, rng=1) == augment(batch, rng=1)).all())
        True
    """

    crop_size: tuple[int, int] | None = None
    horizontal_flip: bool = False
    vertical_flip: bool = False
    rotate90: bool = False
    zoom: tuple[float, float] | None = None
    contrast: tuple[float, float] | None = None
    brightness: float = 0.0
    channel_gain: float = 0.0

    def __post_init__(self):
        if self.crop_size is not None:
            crop = tuple(int(v) for v in self.crop_size)
            if len(crop) != 2 or min(crop) <= 0:
                raise ValueError(
                    "Augment: crop_size must be (height, width) with positive "
                    f"values, got {self.crop_size}."
                )
            object.__setattr__(self, "crop_size", crop)
        for name in ("zoom", "contrast"):
            value = getattr(self, name)
            if value is None:
                continue
            low, high = (float(v) for v in value)
            if low > high:
                raise ValueError(
                    f"Augment: {name} range must have low <= high, got {value}."
                )
            object.__setattr__(self, name, (low, high))
        if self.zoom is not None and self.zoom[0] <= -1.0:
            raise ValueError(f"Augment: zoom factors must be > -1, got {self.zoom}.")
        if self.contrast is not None and self.contrast[0] < 0.0:
            raise ValueError(
                f"Augment: contrast factors must be >= 0, got {self.contrast}."
            )
        if not 0.0 <= self.brightness <= 1.0:
            raise ValueError(
                f"Augment: brightness must be in [0, 1], got {self.brightness}."
            )
        if not 0.0 <= self.channel_gain < 1.0:
            raise ValueError(
                f"Augment: channel_gain must be in [0, 1), got {self.channel_gain}."
            )

    def output_size(self, input_size: Sequence[int]) -> tuple[int, int]:
        """Return the ``(height, width)`` of augmented images.

        Args:
            input_size: ``(height, width)`` of the input images.

        Returns:
            ``crop_size`` when cropping, else ``input_size``.

        Examples:
            >>> Augment(crop_size=(2, 3)).output_size((10, 10))
            (2, 3)
        """
        if self.crop_size is not None:
            return self.crop_size
        return int(input_size[0]), int(input_size[1])

    def __call__(
        self,
        images: np.ndarray,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray:
        """Augment a batch ``(B, H, W, C)`` (or one image ``(H, W, C)``).

        Args:
            images: ``uint8`` array.
            rng: A numpy ``Generator`` or an integer seed. ``None`` draws
                fresh OS entropy (not reproducible).

        Returns:
            The augmented ``uint8`` array; a new array, the input is untouched.

        Raises:
            ValueError: If the input is not a 3-D/4-D ``uint8`` array or is
                smaller than ``crop_size``.
        """
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(
                "Augment: expected a uint8 array (B, H, W, C) or (H, W, C), got "
                f"dtype {images.dtype} and shape {images.shape}."
            )
        if images.ndim == 3:
            return self(images[None], rng)[0]
        rng = np.random.default_rng(rng)
        batch, height, width, _ = images.shape
        if self.crop_size is not None and (
            self.crop_size[0] > height or self.crop_size[1] > width
        ):
            raise ValueError(
                f"Augment: crop_size {self.crop_size} is larger than the images "
                f"({height}, {width})."
            )
        out_h, out_w = self.output_size((height, width))
        square = out_h == out_w
        output = np.empty((batch,) + (out_h, out_w) + images.shape[3:], np.uint8)
        for i in range(batch):
            output[i] = self._geometry(images[i], rng, square)
        return self._colour(output, rng)

    def _geometry(self, image, rng, square):
        height, width = image.shape[:2]
        if self.zoom is not None:
            scale = 1.0 + rng.uniform(*self.zoom)
            # Output pixel centres mapped back to input pixel centres around
            # the image centre; rows and columns are independent, so one
            # fancy-index gather per axis is enough.
            rows = np.floor((np.arange(height) + 0.5 - height / 2) * scale + height / 2)
            cols = np.floor((np.arange(width) + 0.5 - width / 2) * scale + width / 2)
            rows = _reflect_indices(rows.astype(np.int64), height)
            cols = _reflect_indices(cols.astype(np.int64), width)
            image = image[rows][:, cols]
        if self.crop_size is not None:
            crop_h, crop_w = self.crop_size
            top = rng.integers(0, height - crop_h + 1)
            left = rng.integers(0, width - crop_w + 1)
            image = image[top : top + crop_h, left : left + crop_w]
        if self.horizontal_flip and rng.random() < 0.5:
            image = image[:, ::-1]
        if self.vertical_flip and rng.random() < 0.5:
            image = image[::-1]
        if self.rotate90:
            turns = rng.integers(0, 4) if square else 2 * rng.integers(0, 2)
            image = np.rot90(image, k=int(turns))
        return image

    def _colour(self, batch, rng):
        if self.contrast is None and not self.brightness and not self.channel_gain:
            return batch
        n, channels = batch.shape[0], batch.shape[-1]
        x = batch.astype(np.float32)
        if self.contrast is not None:
            factor = rng.uniform(*self.contrast, size=(n, 1, 1, 1)).astype(np.float32)
            mean = x.mean(axis=(1, 2), keepdims=True)
            x = (x - mean) * factor + mean
        if self.brightness:
            delta = rng.uniform(-self.brightness, self.brightness, size=(n, 1, 1, 1))
            x += np.float32(255.0) * delta.astype(np.float32)
        if self.channel_gain:
            gain = rng.uniform(
                1 - self.channel_gain, 1 + self.channel_gain, size=(n, 1, 1, channels)
            )
            x *= gain.astype(np.float32)
        return np.clip(x, 0, 255).round().astype(np.uint8)
