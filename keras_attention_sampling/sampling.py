"""Where to look: the maths of sampling patches from an attention map.

Pure functions in `keras.ops` that `PatchSampler` and `AttentionMap` call. An
attention map is a distribution over the cells of a `(h, w)` grid laid over a
`(H, W)` image; cell `(i, j)` is the patch centred at
`((i + 0.5) * H / h, (j + 0.5) * W / w)`. Everything here works on flat cell
indices `i * w + j`: `sample_cells` draws them, `draw_log_prob` says how
likely a draw was (the policy gradient needs it), `cells_to_centres` places
them and `gather_patches` cuts their patches.
"""

import contextlib
import contextvars
import math

import keras
from keras import ops, random

# The smallest normal float32. Clamping at it keeps `log` finite and its
# gradient zero (not NaN) where a probability has underflowed to 0.
_TINY = 1.1754944e-38


def log_softmax_2d(logits):
    """Log-probabilities of a softmax taken jointly over both spatial axes.

    Computed in float32 with the max subtracted first, so it is exact and
    finite even where the probability itself underflows to zero.

    Args:
        logits: tensor `(B, h, w)`.

    Returns:
        float32 tensor `(B, h, w)` whose `exp` sums to 1 over `(h, w)`.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> log_p = log_softmax_2d(np.array([[[0.0, 200.0]]]))
        >>> [round(float(v), 3) for v in ops.convert_to_numpy(log_p)[0, 0]]
        [-200.0, 0.0]
    """
    logits = ops.cast(logits, "float32")
    batch, height, width = ops.shape(logits)
    flat = ops.reshape(logits, (batch, height * width))
    flat = flat - ops.stop_gradient(ops.max(flat, axis=-1, keepdims=True))
    log_norm = ops.log(ops.sum(ops.exp(flat), axis=-1, keepdims=True))
    return ops.reshape(flat - log_norm, (batch, height, width))


def safe_log(probabilities):
    """`log(p)` that stays finite, with a zero gradient where `p` is 0.

    Use it only for probabilities from an unknown source; prefer exact
    log-probabilities such as those of `log_softmax_2d`.
    """
    probabilities = ops.cast(probabilities, "float32")
    return ops.log(ops.maximum(probabilities, _TINY))


def masked_log_probs(log_probs, mask):
    """Log-probabilities of a map restricted to the cells where `mask` holds.

    The distribution conditioned on the masked cells, renormalised in log
    space; a masked-out cell gets `log` of the smallest normal float32 (its
    probability is 0 to float32 precision), which keeps every term finite.

    Args:
        log_probs: float32 `(B, h, w)` log-probabilities.
        mask: bool `(B, h, w)`, at least one cell `True` per image.

    Returns:
        float32 `(B, h, w)`.
    """
    floor = math.log(_TINY)
    kept = ops.where(mask, log_probs, -math.inf)
    batch = ops.shape(log_probs)[0]
    flat = ops.reshape(kept, (batch, -1))
    top = ops.stop_gradient(ops.max(flat, axis=-1))
    norm = top + ops.log(ops.sum(ops.exp(flat - top[:, None]), axis=-1))
    renormalised = log_probs - norm[:, None, None]
    return ops.where(mask, renormalised, floor)


_SEED_SALT = contextvars.ContextVar("seed_salt", default=None)


@contextlib.contextmanager
def seed_salt(salt):
    """Mixes `salt` into the seed of every sampler that draws inside the block.

    Data-parallel replicas that each run the step on their shard share one
    copy of a sampler's seed state, so they would draw the same cells for the
    same position in their shards. Each replica's backend plumbing passes its
    replica id here (a Python int or a scalar tensor), which gives every
    replica its own stream of draws.
    """
    token = _SEED_SALT.set(salt)
    try:
        yield
    finally:
        _SEED_SALT.reset(token)


def salted(seed_generator):
    """`seed_generator`, or inside `seed_salt` a view of it with the salt mixed in."""
    salt = _SEED_SALT.get()
    return seed_generator if salt is None else _SaltedSeed(seed_generator, salt)


class _SaltedSeed(random.SeedGenerator):
    # A view of another generator (no state of its own): its seeds move the
    # first word by the salt, so two salts give two independent streams.
    def __init__(self, generator, salt):  # shares `generator`'s state
        self.generator = generator
        self.salt = salt

    def next(self, ordered=True):
        seed = self.generator.next(ordered)
        salt = ops.cast(self.salt, seed.dtype) * ops.cast(1_000_003, seed.dtype)
        return seed + ops.stack([salt, ops.zeros_like(salt)])


def sample_cells(log_probs, n_patches, replace=True, seed=None):
    """Draws `n_patches` cells per image from a flattened attention map.

    With replacement the draws are independent categorical samples. Without
    replacement it uses the Gumbel-top-k trick: perturbing every log-probability
    with Gumbel noise and keeping the k largest gives the cells in the order of
    sequential sampling without replacement.

    Args:
        log_probs: float32 `(B, K)` log-probabilities over the K cells.
        n_patches: number of cells to draw per image.
        replace: sample with replacement (categorical) or without
            (Gumbel-top-k).
        seed: a `keras.random.SeedGenerator` (or integer seed).

    Returns:
        int32 `(B, n_patches)` flat cell indices, in draw order.
    """
    log_probs = ops.convert_to_tensor(log_probs, "float32")
    if replace:
        return _categorical_in_blocks(log_probs, n_patches, seed)
    uniform = random.uniform(ops.shape(log_probs), minval=_TINY, maxval=1.0, seed=seed)
    gumbel = -ops.log(-ops.log(uniform))
    return top_cells(log_probs + gumbel, n_patches)


def _categorical_in_blocks(log_probs, n_patches, seed):
    """`n_patches` categorical draws per row of `(B, K)` log-probabilities.

    One Gumbel-max draw over all `K` cells costs `K` random numbers (JAX's
    and XLA's `categorical` make `B x n_patches x K` of them: 9 M for a
    batch of 8 lymphoma maps). Drawing first a block of `C ~ sqrt(K)` cells
    with its total probability, then a cell inside that block with its
    probability given the block, is the same distribution,
    `P(block) P(cell | block) = a_cell`, in log space throughout, for
    `n_patches x (K / C + C)` random numbers per image.
    """
    cells = log_probs.shape[1]
    if cells is None or cells < 16:
        return ops.cast(random.categorical(log_probs, n_patches, seed=seed), "int32")
    width = math.isqrt(cells - 1) + 1  # ceil(sqrt(K))
    blocks = -(-cells // width)
    batch = ops.shape(log_probs)[0]
    # Pad to blocks x width cells of probability 0 (log -inf): never drawn.
    padded = ops.pad(
        log_probs, [[0, 0], [0, blocks * width - cells]], constant_values=-math.inf
    )
    grid = ops.reshape(padded, (batch, blocks, width))
    block = random.categorical(
        ops.logsumexp(grid, axis=2), n_patches, seed=seed, dtype="int32"
    )
    rows = ops.reshape(
        block + ops.arange(batch, dtype="int32")[:, None] * blocks, (-1,)
    )
    within = ops.take(ops.reshape(grid, (-1, width)), rows, axis=0)
    column = random.categorical(within, 1, seed=_second_seed(seed), dtype="int32")
    return block * width + ops.reshape(column, (batch, n_patches))


def _second_seed(seed):
    # A seed generator moves on by itself; an integer or a seed tensor used
    # twice would give both draws the same random bits.
    if seed is None or isinstance(seed, random.SeedGenerator):
        return seed
    if isinstance(seed, int):
        return seed + 1
    seed = ops.convert_to_tensor(seed)
    return seed + ops.cast([0, 1], seed.dtype)


def top_cells(scores, n_patches):
    """The `n_patches` highest-scoring cells per image, best first."""
    _, cells = ops.top_k(scores, n_patches, sorted=True)
    return ops.cast(cells, "int32")


def draw_log_prob(log_probs, cells, replace=True):
    """Log-probability of each drawn cell, given the draws before it.

    With replacement every draw has probability `a_n`. Without replacement
    the n-th draw is taken from what is left, so its probability is
    `a_n / (1 - sum_{m<n} a_m)`; summing over n gives the log-probability of
    the ordered set, which is what REINFORCE needs for Gumbel-top-k samples.

    Args:
        log_probs: float32 `(B, K)` log-probabilities.
        cells: int `(B, N)` cells in draw order.
        replace: whether the cells were drawn with replacement.

    Returns:
        float32 `(B, N)` per-draw log-probabilities.
    """
    sampled = ops.take_along_axis(log_probs, ops.cast(cells, "int32"), axis=1)
    if replace:
        return sampled
    probabilities = ops.exp(sampled)
    mass_before = ops.cumsum(probabilities, axis=1) - probabilities
    # Clamp keeps the last draws finite when float rounding makes the used
    # mass reach 1; those draws then carry a (correct) log-probability near 0.
    remaining = ops.maximum(1.0 - mass_before, _TINY)
    return sampled - ops.log(remaining)


def cells_to_centres(cells, map_shape, image_shape):
    """Full-resolution `(y, x)` centre of each flat cell index.

    Args:
        cells: int `(B, N)` flat indices into an `(h, w)` map.
        map_shape: `(h, w)`.
        image_shape: `(H, W)`.

    Returns:
        float32 `(B, N, 2)` pixel coordinates `((i + 0.5) H / h, (j + 0.5) W / w)`.
    """
    map_h, map_w = map_shape
    image_h, image_w = image_shape
    rows = ops.cast(cells // map_w, "float32")
    cols = ops.cast(cells % map_w, "float32")
    y = (rows + 0.5) * (image_h / map_h)
    x = (cols + 0.5) * (image_w / map_w)
    return ops.stack([y, x], axis=-1)


def _reflect(index, size):
    # Mirror without repeating the edge pixel, as `numpy.pad(mode="reflect")`.
    index = ops.abs(index)
    return (size - 1) - ops.abs((size - 1) - index)


def gather_patches(
    images, positions, patch_size, padding="reflect", fill_value=0, image_index=None
):
    """Cuts square patches centred at `positions` out of full-resolution images.

    Only the `B * N * p * p` pixels needed are gathered, so the cost does not
    grow with the image size. A patch centred at `(y, x)` covers rows
    `floor(y) - p // 2` to `floor(y) - p // 2 + p - 1` (and likewise columns).
    Pixels outside the image are mirrored back in (`"reflect"`, no edge
    repeat) or replaced by `fill_value` (`"constant"`).

    Args:
        images: `(B, H, W, C)` tensor of any dtype; it is not copied or cast.
        positions: `(B, N, 2)` patch centres in pixels, `(y, x)`.
        patch_size: side `p` of the square patches.
        padding: `"reflect"` or `"constant"`.
        fill_value: the value of out-of-image pixels with `"constant"`.
        image_index: optional int `(B',)`: row `b` of `positions` belongs to
            image `image_index[b]`. Lets several draws share one image
            without copying it. By default row `b` belongs to image `b`.

    Returns:
        `(B', N, p, p, C)` tensor with the dtype of `images`.
    """
    _, height, width, channels = ops.shape(images)
    batch, n_patches = ops.shape(positions)[0], ops.shape(positions)[1]
    if image_index is None:
        image_index = ops.arange(batch, dtype="int32")
    image_index = ops.cast(image_index, "int32")
    offsets = ops.arange(patch_size, dtype="int32") - patch_size // 2
    corner = ops.cast(ops.floor(positions), "int32")
    # (B, N, p) rows and columns of every pixel of every patch.
    rows = corner[..., 0:1] + offsets
    cols = corner[..., 1:2] + offsets
    inside = None
    if padding == "reflect":
        rows = _reflect(rows, height)
        cols = _reflect(cols, width)
    else:
        inside_rows = ops.logical_and(rows >= 0, rows < height)
        inside_cols = ops.logical_and(cols >= 0, cols < width)
        inside = ops.logical_and(inside_rows[..., :, None], inside_cols[..., None, :])
        rows = ops.clip(rows, 0, height - 1)
        cols = ops.clip(cols, 0, width - 1)
    if keras.backend.backend() == "jax":
        patches = _gather_by_windows(images, image_index, rows, cols, patch_size)
    else:
        image_offset = image_index[:, None, None, None] * (height * width)
        flat_index = image_offset + rows[..., :, None] * width + cols[..., None, :]
        pixels = ops.reshape(images, (-1, channels))
        patches = ops.take(pixels, ops.reshape(flat_index, (-1,)), axis=0)
        patches = ops.reshape(
            patches, (batch, n_patches, patch_size, patch_size, channels)
        )
    if inside is not None:
        fill = ops.cast(fill_value, patches.dtype)
        patches = ops.where(inside[..., None], patches, fill)
    return patches


def _gather_by_windows(images, image_index, rows, cols, patch_size):
    """The same gather as one `p x p` window slice per patch.

    Eager JAX copies the whole image when it is flattened for `take`, which
    makes the flat gather grow with the image (measured: 56x from 1024^2 to
    8192^2); slicing windows never touches the rest of the image. Each
    patch's pixels (already mirrored or clamped into the image) lie within
    `p` of each other, so they all fall inside one window placed at their
    smallest row and column, clamped into the image.
    """
    _, height, width, channels = ops.shape(images)
    batch, n_patches = ops.shape(rows)[0], ops.shape(rows)[1]
    top = ops.clip(ops.min(rows, axis=-1), 0, height - patch_size)
    left = ops.clip(ops.min(cols, axis=-1), 0, width - patch_size)
    index = ops.broadcast_to(image_index[:, None], (batch, n_patches))
    starts = ops.stack([index, top, left, ops.zeros_like(index)], axis=-1)
    size = (1, patch_size, patch_size, channels)
    windows = ops.vectorized_map(
        lambda start: ops.slice(images, start, size)[0], ops.reshape(starts, (-1, 4))
    )
    windows = ops.reshape(windows, (batch, n_patches, patch_size, patch_size, channels))
    local_rows = rows - top[..., None]
    local_cols = cols - left[..., None]
    patches = ops.take_along_axis(windows, local_rows[:, :, :, None, None], axis=2)
    return ops.take_along_axis(patches, local_cols[:, :, None, :, None], axis=3)
