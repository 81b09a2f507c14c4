"""Megapixel MNIST: a few digits on a large noisy canvas, made batch by batch."""

import functools
import math

import keras
import numpy as np
from PIL import Image, ImageDraw, ImageFont


@functools.lru_cache(maxsize=64)
def _font(size):
    return ImageFont.load_default(size=size)


def _glyph(digit, side, rng):
    """One `side`-pixel `uint8` tile of `digit` in Pillow's default font, with
    a random size, stroke and slant, so that no two copies are the same."""
    tile = Image.new("L", (2 * side, 2 * side), 0)
    font = _font(int(side * rng.uniform(1.1, 1.4)))
    ImageDraw.Draw(tile).text(
        (side, side),
        str(digit),
        fill=int(rng.integers(192, 256)),
        font=font,
        anchor="mm",
        stroke_width=int(rng.integers(0, 3)),
        stroke_fill=int(rng.integers(192, 256)),
    )
    tile = tile.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR)
    return np.asarray(
        tile.crop((side // 2, side // 2, side // 2 + side, side // 2 + side))
    )


class MegapixelDigits(keras.utils.PyDataset):
    """Megapixel MNIST: the label is the digit that appears three times.

    Follows the construction of the original attention-sampling paper's
    benchmark: each `canvas` x `canvas` grayscale `uint8` image holds
    `digits` digits of `digit_size` pixels, `target_count` of them the
    label's class and the others of other classes, placed without overlap,
    plus `noise` random line scribbles. At the original 1500 x 1500 with five
    28-pixel digits, about 0.17% of the pixels carry the label. The digits
    are procedural glyphs (Pillow's default font at random sizes, strokes and
    slants), so nothing is downloaded.

    Images are made per batch from `(seed, index)`, never all held in
    memory: 5000 canvases of 1500 x 1500 would take 11 GB. A batch is the
    same whatever worker builds it and in whatever order.

    Args:
        n: number of images.
        batch_size: images per batch.
        canvas: side of the square canvas.
        digit_size: side of a digit.
        digits: digits per image.
        target_count: how many of them are of the label's class.
        noise: line scribbles per image.
        classes: the labels are `0 .. classes - 1`.
        seed: the data set (two seeds give two independent sets).
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, ...).

    Examples:
        >>> data = MegapixelDigits(4, batch_size=2, canvas=128, noise=5, seed=0)
        >>> images, labels = data[0]
        >>> images.shape, images.dtype.name, labels.tolist() == data.labels[:2].tolist()
        ((2, 128, 128, 1), 'uint8', True)
        >>> len(data.evidence(0))  # the boxes (top, left, size) of the label's digits
        3
    """

    def __init__(
        self,
        n,
        batch_size=16,
        canvas=1500,
        digit_size=28,
        digits=5,
        target_count=3,
        noise=50,
        classes=10,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0 < target_count <= digits or digits - target_count > classes - 1:
            raise ValueError(
                "MegapixelDigits: need 0 < target_count <= digits and enough other "
                f"classes. Received: digits={digits}, target_count={target_count}, "
                f"classes={classes}"
            )
        if digits * digit_size**2 > canvas**2 / 4:
            raise ValueError(
                f"MegapixelDigits: {digits} digits of {digit_size} px do not fit a "
                f"{canvas} px canvas without overlap."
            )
        self.n = int(n)
        self.batch_size = int(batch_size)
        self.canvas = int(canvas)
        self.digit_size = int(digit_size)
        self.digits = int(digits)
        self.target_count = int(target_count)
        self.noise = int(noise)
        self.classes = int(classes)
        self.seed = int(seed)
        self.labels = np.array([self._rng(i).integers(classes) for i in range(self.n)])

    def _rng(self, index):
        # The label is the first draw, so `labels` is known without drawing.
        return np.random.default_rng([self.seed, index])

    def __len__(self):
        return math.ceil(self.n / self.batch_size)

    def __getitem__(self, batch):
        indices = range(
            batch * self.batch_size, min(self.n, (batch + 1) * self.batch_size)
        )
        images = np.stack([self.image(i)[0] for i in indices])
        return images[..., None], self.labels[list(indices)].astype("int32")

    def image(self, index):
        """`(canvas, canvas)` `uint8` image `index` and its digits' boxes
        `(top, left, size, digit)`."""
        rng = self._rng(index)
        label = int(rng.integers(self.classes))
        others = [c for c in range(self.classes) if c != label]
        chosen = rng.choice(others, self.digits - self.target_count, replace=False)
        image = Image.new("L", (self.canvas, self.canvas), 0)
        draw = ImageDraw.Draw(image)
        for _ in range(self.noise):
            points = rng.uniform(0, self.canvas, 2) + np.cumsum(
                rng.normal(0, self.digit_size / 3, (int(rng.integers(2, 5)), 2)), axis=0
            )
            draw.line([tuple(p) for p in points], fill=int(rng.integers(128, 256)),
                      width=int(rng.integers(1, 3)))  # fmt: skip
        pixels = np.array(image)
        boxes, side = [], self.digit_size
        for digit in [label] * self.target_count + [int(c) for c in chosen]:
            while True:
                top, left = rng.integers(0, self.canvas - side + 1, 2)
                if all(
                    abs(top - other_top) >= side or abs(left - other_left) >= side
                    for other_top, other_left, _, _ in boxes
                ):
                    break
            boxes.append((int(top), int(left), side, digit))
            region = pixels[top : top + side, left : left + side]
            np.maximum(region, _glyph(digit, side, rng), out=region)
        return pixels, boxes

    def evidence(self, index):
        """Boxes `(top, left, size)` of the digits of image `index`'s label."""
        label = int(self.labels[index])
        return [(t, x, s) for t, x, s, d in self.image(index)[1] if d == label]
