"""Batches for `fit`, `evaluate` and `predict` whose patches are read from slides.

Sampling is made data. For each batch the loader takes the slides' views,
asks the model which cells to look at (`AttentionSamplingModel.propose`,
with the attention weights of the latest step), reads exactly those patches
from the slides in a pool of threads, and hands the step `(view, cells,
patches, proposal_log_probs)`. The step recomputes the cells'
log-probabilities under the weights it differentiates and weights each
image by their ratio to the proposal's, so batches prepared a few steps
ahead by the `PyDataset` workers still give the on-policy gradient in
expectation (the ratio is 1 when no step came in between).
"""

import collections
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from keras_attention_sampling.slides.index import SlideIndex
from keras_attention_sampling.slides.slide import (
    ArraySlide,
    Slide,
    SlideError,
    open_slide,
)


def _as_slide(value):
    """A `Slide` as it is, an in-memory image as an `ArraySlide`, else a path."""
    if isinstance(value, Slide):
        return value
    if isinstance(value, np.ndarray):
        return ArraySlide(value)
    return os.fspath(value)


class _Cache:
    """A thread-safe least-recently-used cache with a size budget."""

    def __init__(self, budget, size=lambda value: 1, evict=lambda value: None):
        self.budget, self.size, self.evict = budget, size, evict
        self.items = collections.OrderedDict()
        self.lock = threading.Lock()

    def get(self, key, make):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = make()
        with self.lock:
            self.items[key] = value
            while (
                len(self.items) > 1
                and sum(self.size(v) for v in self.items.values()) > self.budget
            ):
                self.evict(self.items.popitem(last=False)[1])
        return value


class SlideDataset(keras.utils.PyDataset):
    """Slides as batches of drawn patches for an `AttentionSamplingModel`.

    Each slide is one example. Its view is made from its pyramid at the
    model's `scale` (`Slide.view`), padded at the bottom and right with white
    (255, bare glass, which a `TissueMask` removes) to the largest view of
    the dataset, so every batch has one shape and the step compiles once.
    Cells in the padding read white patches. Patches are cut as the
    in-memory sampler cuts them: `patch_size` pixels of `patch_level`
    centred on the cell, mirrored or filled (the model's `padding`) where
    they cross the slide's edge.

    Pass it to `fit`, `evaluate` or `predict`; `AttentionSamplingModel.fit`
    adds `follow_weights()` to the callbacks, so proposals use the weights of
    the latest step (with another training loop, add it yourself). Slides
    are opened lazily and at most `open_slides` stay open; views are cached
    up to `view_cache_bytes`.

    Args:
        model: the `AttentionSamplingModel` the batches are for; its `scale`,
            `n_patches`, `patch_size`, `padding` and `samples_per_image` are
            read at every batch.
        slides: a `SlideIndex`, a list of paths or `Slide`s, or one of them.
        labels: class indices, one per slide (taken from a `SlideIndex`).
        batch_size: slides per batch.
        training: draw as a training step does (every slide
            `samples_per_image` times, BatchNormalization on the batch); by
            default when labels are given and `shuffle` is on.
        shuffle: reshuffle the slides every epoch (default: `training`).
        seed: seed of the shuffles and the draws.
        patch_level: the pyramid level patches are read from.
        readers: threads reading patches.
        open_slides: slides kept open at once.
        view_cache_bytes: memory for views kept between epochs.
        view_shape: `(h, w)` of every slide's view instead of the model's
            `scale`: each slide is then seen through a map of the same size
            whatever its size (a cell covers `H / h` level-0 rows), which
            keeps the cost of a slide flat from megapixels to gigapixels.
        shard: `(index, count)`: keep only this worker's share of the
            slides (every `count`-th, from `index`) when `count` processes
            train together, so each reads only its own slides' pixels. Every
            share is made the same length (the shorter ones repeat their
            first slides), so the workers run the same number of steps, and
            the views are padded to one shape over all the slides (their
            headers are read to find it, unless `view_shape` is given).
        **kwargs: `PyDataset` arguments (`workers`, `max_queue_size`);
            `use_multiprocessing` is not supported (the model lives here).
    """

    def __init__(
        self,
        model,
        slides,
        labels=None,
        batch_size=1,
        training=None,
        shuffle=None,
        seed=0,
        patch_level=0,
        readers=4,
        open_slides=64,
        view_cache_bytes=2**30,
        view_shape=None,
        shard=None,
        **kwargs,
    ):
        if kwargs.get("use_multiprocessing"):
            raise ValueError(
                "SlideDataset: use_multiprocessing is not supported; use workers "
                "(threads) and readers."
            )
        super().__init__(**kwargs)
        if isinstance(slides, SlideIndex):
            labels = slides.labels if labels is None else labels
            slides = slides.paths
        if isinstance(slides, (str, os.PathLike, Slide)):
            slides = [slides]
        self.slides = [_as_slide(s) for s in slides]
        if not self.slides:
            raise SlideError("SlideDataset: no slides given.")
        self.labels = None if labels is None else np.asarray(labels, "int32")
        if self.labels is not None and len(self.labels) != len(self.slides):
            raise SlideError(
                f"SlideDataset: {len(self.slides)} slides but {len(self.labels)} labels."
            )
        self.shard = None if shard is None else tuple(int(v) for v in shard)
        self.model = model
        self.batch_size = int(batch_size)
        self.shuffle = bool(training) if shuffle is None else bool(shuffle)
        self.training = (
            self.labels is not None and self.shuffle if training is None else training
        )
        self.seed = int(seed)
        self.patch_level = int(patch_level)
        self.readers = int(readers)
        self._epoch = 0
        self._state = None
        self._owned = _Cache(
            open_slides, evict=lambda slide: slide.close()
        )  # slides opened here, by path
        self._views = _Cache(view_cache_bytes, size=lambda view: view.nbytes)
        self._pool = ThreadPoolExecutor(self.readers)
        self._shapes = [self._slide(i).shape for i in range(len(self.slides))]
        self._fixed_view = (
            None if view_shape is None else tuple(int(v) for v in view_shape)
        )
        # Over all the slides, before any shard is taken: the workers of a
        # shard then agree on it (and every slide is checked to have a view).
        self.view_shape = self._fixed_view or self._view_shape()
        if self.shard is not None:
            self._take_shard()
        self._order = np.arange(len(self.slides))
        self._check_patches_fit()
        self._reshuffle()

    # -- slides and views ------------------------------------------------

    def _take_shard(self):
        """Keeps this worker's slides (their labels and shapes), every
        worker's share the same length."""
        index, count = self.shard
        if count < 1 or not 0 <= index < count:
            raise ValueError(
                "SlideDataset: shard must be (index, count) with 0 <= index < "
                f"count. Received: shard={self.shard}"
            )
        if len(self.slides) < count:
            raise SlideError(
                f"SlideDataset: {len(self.slides)} slides cannot be shared by "
                f"{count} workers."
            )
        length = math.ceil(len(self.slides) / count)
        mine = list(range(index, len(self.slides), count))
        mine = (mine * length)[:length]
        self.slides = [self.slides[i] for i in mine]
        self._shapes = [self._shapes[i] for i in mine]
        if self.labels is not None:
            self.labels = self.labels[mine]

    def _slide(self, i):
        slide = self.slides[i]
        if isinstance(slide, Slide):
            return slide
        return self._owned.get(slide, lambda: open_slide(slide))

    def _view_shape(self):
        scale = self.model.scale
        shapes = [(h // scale, w // scale) for h, w, _ in self._shapes]
        for (h, w), slide in zip(shapes, self.slides):
            if h < 1 or w < 1:
                raise SlideError(
                    f"{getattr(slide, 'path', slide)}: smaller than the model's "
                    f"scale {scale}; it has no view."
                )
        return tuple(int(v) for v in np.max(shapes, axis=0))

    def _check_patches_fit(self):
        p, level = self.model.patch_size, self.patch_level
        for i in range(len(self.slides)):
            slide = self._slide(i)
            if level >= len(slide.levels):
                raise SlideError(
                    f"{slide.path}: has levels 0..{len(slide.levels) - 1}, no "
                    f"patch_level {level}."
                )
            shape = slide.levels[level].shape[:2]
            if min(shape) < p:
                raise SlideError(
                    f"{slide.path}: level {level} is {shape[0]}x{shape[1]}, smaller "
                    f"than a {p}x{p} patch."
                )

    def view(self, i):
        """The view of slide `i` at the model's scale, unpadded."""
        scale, shape = self.model.scale, self._fixed_view

        def make():
            if shape is not None:
                return self._slide(i).view(shape=shape)
            return self._slide(i).view(downsample=scale)

        return self._views.get((i, shape or scale), make)

    # -- PyDataset -------------------------------------------------------

    def __len__(self):
        return math.ceil(len(self.slides) / self.batch_size)

    def on_epoch_end(self):
        self._epoch += 1
        self._reshuffle()

    def _reshuffle(self):
        if self.shuffle:
            rng = np.random.default_rng((self.seed, self._epoch))
            self._order = rng.permutation(len(self.slides))

    def __getitem__(self, index):
        ids = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        if not len(ids):
            raise IndexError(f"SlideDataset: batch {index} of {len(self)}.")
        views = np.full((len(ids), *self.view_shape, self._shapes[0][2]), 255, np.uint8)
        own = []
        for row, i in enumerate(ids):
            view = self.view(i)
            if view.shape[2] != views.shape[3]:
                raise SlideError(
                    f"{getattr(self.slides[i], 'path', self.slides[i])}: has "
                    f"{view.shape[2]} channels, the first slide {views.shape[3]}."
                )
            views[row, : view.shape[0], : view.shape[1]] = view
            own.append(view.shape[:2])
        k = self.model.samples_per_image if self.training else 1
        seed = int(
            np.random.default_rng((self.seed, self._epoch, index)).integers(2**31)
        )
        cells, log_probs = self.model.propose(
            views,
            samples_per_image=k,
            training=self.training,
            seed=seed,
            state=self._state,
        )
        patches = self.read_patches(np.repeat(ids, k), cells, np.repeat(own, k, axis=0))
        inputs = {
            "view": views,
            "cells": cells,
            "patches": patches,
            "proposal_log_probs": log_probs,
        }
        if self.labels is None:
            return (inputs,)
        return inputs, self.labels[ids]

    # -- patches ---------------------------------------------------------

    def centres(self, i, cells, own_view_shape):
        """Level-0 `(y, x)` centres of flat `cells` of the padded map, for
        slide `i` whose own view is `own_view_shape`."""
        rows, cols = np.divmod(np.asarray(cells), self.view_shape[1])
        height, width, _ = self._shapes[i]
        own_h, own_w = own_view_shape
        return np.stack(
            [(rows + 0.5) * height / own_h, (cols + 0.5) * width / own_w], axis=-1
        )

    def read_patches(self, ids, cells, own_shapes):
        """`uint8` `(rows, N, p, p, C)`: the patches of every row's cells."""
        p, level = self.model.patch_size, self.patch_level
        padding = self.model.padding
        fill = getattr(self.model.sampler, "fill_value", 0)
        channels = self._shapes[ids[0]][2]
        out = np.empty((len(ids), cells.shape[1], p, p, channels), np.uint8)

        def read(row, n, i, centre):
            slide = self._slide(i)
            height, width, _ = self._shapes[i]
            if not (0 <= centre[0] < height and 0 <= centre[1] < width):
                out[row, n] = 255  # padding of the view: glass
                return
            downsample = slide.levels[level].downsample
            corner = np.floor(centre / downsample).astype(int) - p // 2
            out[row, n] = slide.read_region(
                corner, (p, p), level=level, padding=padding, fill_value=fill
            )

        jobs = []
        for row, (i, own) in enumerate(zip(ids, own_shapes)):
            centres = self.centres(i, cells[row], own)
            for n, centre in enumerate(centres):
                jobs.append(self._pool.submit(read, row, n, i, centre))
        for job in jobs:
            job.result()  # re-raises a reader's error, naming its file
        return out

    # -- the weights proposals are drawn with ----------------------------

    def hold_weights(self):
        """Draws with copies of the attention weights as they are now.

        Keras' JAX trainer takes the variables off the model while it runs
        (they are in its own state), so a loader thread must not read them
        then; `predict` and `evaluate` on slides call this first, and
        `follow_weights` renews the copy after every training step.
        """
        model = self.model
        if hasattr(model, "jax_state_sync"):
            model.jax_state_sync()
        if model.attention_network.built:
            self._state = model.attention_state()

    def follow_weights(self):
        """A callback that hands the attention weights of every step to the
        proposals (on JAX it first syncs the trainer's state to the model)."""
        return _FollowWeights(self)


class _FollowWeights(keras.callbacks.Callback):
    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_train_begin(self, logs=None):
        self.dataset.hold_weights()

    def on_train_batch_end(self, batch, logs=None):
        self.dataset.hold_weights()
