"""A ``keras.utils.PyDataset`` that decodes one batch of images at a time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import keras
import numpy as np

from keras_attention_sampling.datasets.augment import Augment
from keras_attention_sampling.datasets.image_folder import fit_to_size


class ImageSource(Protocol):
    """What `ImageSequence` needs from a dataset.

    Implemented by `ImageFolderIndex`
    and `SyntheticLymphoma`. An
    optional ``image_size(i) -> (height, width)`` method lets
    `ImageSequence` learn the default size without decoding.

    Attributes:
        labels: Integer class label per image.

    Examples:
        >>> import numpy as np
        >>> class Squares:
        ...     labels = np.array([0, 1])
        ...     def __len__(self):
        ...         return 2
        ...     def load_image(self, index):
        ...         return np.full((8, 8, 3), 255 * index, dtype="uint8")
        >>> images, labels = ImageSequence(Squares(), batch_size=2)[0]
        >>> images[:, 0, 0, 0].tolist(), labels.tolist()
        ([0, 255], [0, 1])
    """

    labels: np.ndarray

    def __len__(self) -> int: ...

    def load_image(self, index: int) -> np.ndarray: ...


class ImageSequence(keras.utils.PyDataset):
    """Stream ``(images, labels)`` batches from an image source.

    Only the current batch is decoded, so memory stays at one batch however
    large the dataset. Images are read as RGB ``uint8``; an image whose size
    differs from ``image_size`` is centre-cropped and/or padded with
    ``pad_value`` (never resized, so the pixel scale is kept; see
    `fit_to_size`). Augmentation then
    runs on the ``uint8`` batch.

    Shuffling and augmentation are reproducible: the order of epoch ``e``
    is drawn from ``(seed, e)`` and batch ``i``'s augmentation from
    ``(seed, e, i)``, so results do not depend on which worker builds a batch
    or in which order. ``on_epoch_end`` advances the epoch counter; ``fit``
    calls it after every epoch (and Keras' TensorFlow trainer once more
    before the first), so ``epoch`` counts those calls, not training epochs.

    Args:
        source: An `ImageFolderIndex`, a `SyntheticLymphoma`,
            or any object with ``__len__``, ``labels`` and
            ``load_image(i) -> (H, W, 3) uint8``.
        batch_size: Images per batch.
        indices: Positions in ``source`` to use (e.g. one split from
            `split_by_group`). Defaults to all.
        image_size: ``(height, width)`` every image is cropped/padded to
            before augmentation. Defaults to the size of the first image
            (``indices[0]``).
        shuffle: Reshuffle the order every epoch.
        seed: Seed for shuffling and augmentation. ``None`` picks one at
            random once, at construction.
        augment: An `Augment` (or any callable
            ``(uint8 batch, numpy Generator) -> uint8 batch``), or ``None``.
        dtype: ``"uint8"`` (values 0..255) or ``"float32"`` (scaled to [0, 1]).
        pad_value: Constant for padding smaller images.
        drop_remainder: Drop the last incomplete batch.
        **kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size``,
            passed to ``keras.utils.PyDataset``.

    Examples:
        >>> from keras_attention_sampling.datasets import SyntheticLymphoma
        >>> source = SyntheticLymphoma(n_per_class=2, image_size=(48, 64), seed=0)
        >>> sequence = ImageSequence(source, batch_size=4, shuffle=True, seed=1,
        ...                          dtype="float32")
        >>> len(sequence)
        2
        >>> images, labels = sequence[0]
        >>> images.shape, images.dtype.name, labels.dtype.name
        ((4, 48, 64, 3), 'float32', 'int32')
        >>> sequence[1][0].shape  # the last batch is smaller
        (2, 48, 64, 3)
    """

    def __init__(
        self,
        source: ImageSource,
        batch_size: int = 8,
        *,
        indices: Sequence[int] | np.ndarray | None = None,
        image_size: Sequence[int] | None = None,
        shuffle: bool = False,
        seed: int | None = None,
        augment: Augment | None = None,
        dtype: str = "uint8",
        pad_value: int = 0,
        drop_remainder: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(batch_size) <= 0:
            raise ValueError(
                f"ImageSequence: batch_size must be positive, got {batch_size}."
            )
        if dtype not in ("uint8", "float32"):
            raise ValueError(
                f"ImageSequence: dtype must be 'uint8' or 'float32', got {dtype!r}."
            )
        if indices is None:
            indices = np.arange(len(source))
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            raise ValueError("ImageSequence: no images (empty source or indices).")
        if indices.min() < 0 or indices.max() >= len(source):
            raise ValueError(
                f"ImageSequence: indices must be in [0, {len(source)}), got "
                f"min {indices.min()} and max {indices.max()}."
            )
        if drop_remainder and indices.size < batch_size:
            raise ValueError(
                f"ImageSequence: drop_remainder=True with {indices.size} images and "
                f"batch_size {batch_size} leaves no batch."
            )
        self.source = source
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = (
            int(np.random.SeedSequence().entropy % 2**32) if seed is None else int(seed)
        )
        self.augment = augment
        self.dtype = dtype
        self.pad_value = pad_value
        self.drop_remainder = bool(drop_remainder)
        self._indices = indices
        self._all_labels = np.asarray(source.labels, dtype=np.int32)
        if image_size is None:
            first = int(indices[0])
            if hasattr(source, "image_size"):
                image_size = source.image_size(first)  # header only, no decode
            else:
                image_size = source.load_image(first).shape[:2]
        if len(image_size) != 2 or min(image_size) <= 0:
            raise ValueError(
                f"ImageSequence: image_size must be (height, width), got {image_size}."
            )
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.epoch = 0
        self._order = self._epoch_order()

    def _epoch_order(self) -> np.ndarray:
        if not self.shuffle:
            return self._indices
        rng = np.random.default_rng([self.seed, self.epoch])
        return rng.permutation(self._indices)

    @property
    def indices(self) -> np.ndarray:
        """Source positions in the order this epoch's batches yield them."""
        order = self._order
        if self.drop_remainder:
            order = order[: len(self) * self.batch_size]
        return order

    @property
    def labels(self) -> np.ndarray:
        """``int32`` labels in the order this epoch's batches yield them."""
        return self._all_labels[self.indices]

    def __len__(self) -> int:
        if self.drop_remainder:
            return len(self._indices) // self.batch_size
        return math.ceil(len(self._indices) / self.batch_size)

    def __getitem__(self, index: int):
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(
                f"ImageSequence: batch index {index} out of range for {len(self)} batches."
            )
        positions = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        height, width = self.image_size
        images = np.empty((len(positions), height, width, 3), dtype=np.uint8)
        for slot, position in enumerate(positions):
            image = self.source.load_image(int(position))
            images[slot] = fit_to_size(image, self.image_size, self.pad_value)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            images = self.augment(images, rng)
        labels = self._all_labels[positions]
        if self.dtype == "float32":
            images = images.astype(np.float32) / np.float32(255.0)
        return images, labels

    def on_epoch_end(self):
        """Advance the epoch counter and reshuffle (when ``shuffle=True``)."""
        self.epoch += 1
        self._order = self._epoch_order()
