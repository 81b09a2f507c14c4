import math

import keras
from keras import ops

from keras_attention_sampling import sampling
from keras_attention_sampling.layers.patch_sampler import PatchSampler


def cell_embedding(height, width, size):
    """Sinusoidal embedding `(h * w, size)` of every cell's normalised centre.

    `size / 4` frequencies `2^f pi` of the row and the column, each as a sine
    and a cosine, so that nearby cells get similar vectors and far ones
    different ones.
    """
    rows = (ops.arange(height, dtype="float32") + 0.5) / height
    cols = (ops.arange(width, dtype="float32") + 0.5) / width
    centres = ops.stack(
        [
            ops.reshape(ops.repeat(rows[:, None], width, axis=1), (-1,)),
            ops.reshape(ops.repeat(cols[None, :], height, axis=0), (-1,)),
        ],
        axis=-1,
    )
    return position_embedding(centres, size)


def position_embedding(positions, size):
    """Sinusoidal embedding `(..., size)` of normalised `(y, x)` positions."""
    frequencies = math.pi * 2.0 ** ops.arange(size // 4, dtype="float32")
    angles = ops.cast(positions, "float32")[..., None] * frequencies  # (..., 2, F)
    parts = [
        ops.sin(angles[..., 0, :]),
        ops.cos(angles[..., 0, :]),
        ops.sin(angles[..., 1, :]),
        ops.cos(angles[..., 1, :]),
    ]
    return ops.concatenate(parts, axis=-1)


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class AutoregressiveSampler(PatchSampler):
    """Draws the cells one after another, each conditioned on what came before.

    Instead of `N` independent draws from one map, `p(s_1 .. s_N | x) =
    prod_n p(s_n | x, s_<n)`: the map of draw `n` is the attention's base map
    plus a learned correction,

        log p(s_n = k | x, s_<n) = log softmax(z + c_n)_k,

    where `z` are the base log-probabilities and `c_n[k] = <W h_{n-1}, e_k> /
    sqrt(E)` compares a recurrent state `h` with an embedding `e_k` of cell
    `k`'s position. After each draw the state takes in what the patch showed
    (its feature vector, without gradient: the sampler is trained by the
    policy gradient, the feature network by the classification loss) and
    where it was (`e_{s_n}`), through a `GRUCell`. The attention network
    still runs once per image; the cost grows with `N`, not with the image
    size. With `replace=False` the cells already drawn are excluded. The
    exact log-probability of the sequence is the sum of each draw's, under
    its own map, computed in log space.

    `draw` needs the features of each patch as it is drawn, so the sampler is
    used through `AttentionSamplingModel(sampler=...)`, which gives it the
    model's feature network; it is not a functional-graph layer.

    Args:
        n_patches: number of patches `N`.
        patch_size: side `p` of the patches.
        state_size: size of the recurrent state.
        embedding_size: size `E` of the cell embedding (a multiple of 4).
        replace: keep (`True`) or exclude (`False`) cells already drawn.
        padding: `"reflect"` or `"constant"` at the image borders.
        fill_value: pixel value outside the image with `"constant"`.
        inference_sampling: `"sample"`, or `"top_k"` to take each step's most
            likely cell when `training` is false.
        seed: seed of the layer's `keras.random.SeedGenerator`.
        **kwargs: base layer arguments.

    Examples:
        >>> import numpy as np, keras
        >>> sampler = AutoregressiveSampler(3, 8, seed=0)
        >>> log_attention = np.log(np.full((2, 4, 4), 1 / 16, "float32"))
        >>> images = np.zeros((2, 32, 32, 3), "float32")
        >>> encode = lambda patches: keras.ops.mean(patches, axis=(2, 3))  # (B, 1, C)
        >>> drawn = sampler.draw(log_attention, images, encode, training=True)
        >>> tuple(drawn["cells"].shape), tuple(drawn["step_log_attention"].shape)
        ((2, 3), (2, 3, 4, 4))
    """

    def __init__(
        self,
        n_patches,
        patch_size,
        state_size=32,
        embedding_size=32,
        replace=True,
        padding="reflect",
        fill_value=0.0,
        inference_sampling="sample",
        seed=None,
        **kwargs,
    ):
        super().__init__(
            n_patches,
            patch_size,
            replace=replace,
            padding=padding,
            fill_value=fill_value,
            inference_sampling=inference_sampling,
            seed=seed,
            **kwargs,
        )
        if embedding_size % 4 or embedding_size <= 0:
            raise ValueError(
                "AutoregressiveSampler: embedding_size must be a positive multiple "
                f"of 4. Received: embedding_size={embedding_size}"
            )
        self.state_size = int(state_size)
        self.embedding_size = int(embedding_size)
        self.cell = keras.layers.GRUCell(
            state_size, dtype=self.dtype_policy, name="state"
        )
        self.query = keras.layers.Dense(
            embedding_size,
            kernel_initializer="zeros",
            dtype=self.dtype_policy,
            name="query",
        )

    def build(self, input_shape):
        """`(attention_shape, image_shape[, feature_shape])`: `PatchSampler`'s,
        and the feature network's output shape, whose last axis and `E` make
        the state's input."""
        attention_shape, image_shape, *features = input_shape
        super().build((attention_shape, image_shape))
        feature_size = features[0][-1] if features else 0
        # A loaded sampler's sublayers are built (and locked) already.
        if not self.cell.built:
            self.cell.build((None, feature_size + self.embedding_size))
        if not self.query.built:
            self.query.build((None, self.state_size))

    def draw(
        self, log_attention, images, encode, training=None, image_index=None, cells=None
    ):
        """Draws the `N` cells in turn; returns everything about them.

        Args:
            log_attention: `(B, h, w)` base log-probabilities.
            images: `(B', H, W, C)` full-resolution images.
            encode: callable mapping patches `(B, 1, p, p, C)` to features
                `(B, 1, D)`, the feature network.
            training: Python bool; see `inference_sampling`.
            image_index: optional `(B,)`, as for `PatchSampler.extract`.
            cells: optional `(B, N)`: take these cells instead of drawing,
                to get the log-probability of a given sequence.

        Returns:
            Dict of `cells` `(B, N)`, `draw_log_probs` `(B, N)` (each draw's
            log-probability under its own map), `step_log_attention`
            `(B, N, h, w)` (the maps), `entropy` `(B,)` (their mean
            entropy), `patches` `(B, N, p, p, C)`, `sampled_attention`
            `(B, N)` (each drawn cell's base attention), `positions`
            `(B, N, 2)` and `features` `(B, N, D)`.
        """
        batch = ops.shape(log_attention)[0]
        height, width = log_attention.shape[1], log_attention.shape[2]
        base = ops.reshape(ops.cast(log_attention, "float32"), (batch, -1))
        embedding = cell_embedding(height, width, self.embedding_size)  # (K, E)
        state = ops.zeros((batch, self.state_size), "float32")
        correction = ops.zeros_like(base)
        drawn = ops.zeros_like(base)  # 1 where a cell was drawn already
        greedy = not training and self.inference_sampling == "top_k"
        parts = {
            key: []
            for key in (
                "cells",
                "log_probs",
                "maps",
                "patches",
                "attention",
                "positions",
                "features",
            )
        }
        for step in range(self.n_patches):
            logits = base + correction
            if not self.replace:
                logits = ops.where(drawn > 0, -1e30, logits)
            log_p = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
            if cells is not None:
                cell = ops.cast(cells[:, step : step + 1], "int32")
            elif greedy:
                cell = sampling.top_cells(log_p, 1)
            else:
                cell = sampling.sample_cells(
                    log_p, 1, replace=True, seed=sampling.salted(self.seed_generator)
                )
            patches, attention, positions = self.extract(
                ops.exp(log_attention), images, cell, image_index=image_index
            )
            features = ops.cast(encode(patches), "float32")  # (B, 1, D)
            where = ops.take(embedding, cell[:, 0], axis=0)  # (B, E)
            seen = ops.concatenate([ops.stop_gradient(features[:, 0]), where], axis=-1)
            state, _ = self.cell(seen, [state], training=training)
            query = self.query(state)  # (B, E)
            correction = ops.matmul(query, ops.transpose(embedding)) / math.sqrt(
                self.embedding_size
            )
            drawn = drawn + ops.one_hot(cell[:, 0], ops.shape(base)[1])
            parts["cells"].append(cell)
            parts["log_probs"].append(ops.take_along_axis(log_p, cell, axis=1))
            parts["maps"].append(log_p)
            parts["patches"].append(patches)
            parts["attention"].append(attention)
            parts["positions"].append(positions)
            parts["features"].append(features)
        maps = ops.stack(parts["maps"], axis=1)  # (B, N, K)
        entropy = -ops.mean(ops.sum(ops.exp(maps) * maps, axis=-1), axis=1)
        return {
            "cells": ops.concatenate(parts["cells"], axis=1),
            "draw_log_probs": ops.concatenate(parts["log_probs"], axis=1),
            "step_log_attention": ops.reshape(
                maps, (batch, self.n_patches, height, width)
            ),
            "entropy": entropy,
            "patches": ops.concatenate(parts["patches"], axis=1),
            "sampled_attention": ops.concatenate(parts["attention"], axis=1),
            "positions": ops.concatenate(parts["positions"], axis=1),
            "features": ops.concatenate(parts["features"], axis=1),
        }

    def call(self, inputs, training=None, return_cells=False):
        raise TypeError(
            "AutoregressiveSampler draws with the features of the patches it "
            "draws; use it as AttentionSamplingModel(sampler=...), which calls "
            "`draw` with the model's feature network."
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {"state_size": self.state_size, "embedding_size": self.embedding_size}
        )
        return config
