import keras
from keras import ops

from keras_attention_sampling import sampling

PADDINGS = ("reflect", "constant")
INFERENCE_SAMPLING = ("sample", "top_k")


def _positive_int(name):
    def check(value):
        if isinstance(value, bool) or int(value) != value or value <= 0:
            raise ValueError(
                f"PatchSampler: {name} must be positive and whole. Received: "
                f"{name}={value!r}"
            )
        return int(value)

    return check


def _one_of(name, choices):
    def check(value):
        if value not in choices:
            raise ValueError(
                f"PatchSampler: {name} must be one of {choices}. Received: "
                f"{name}={value!r}"
            )
        return value

    return check


# The settings a model may write after construction, each with the check that
# the constructor applies too.
_CHECKS = {
    "n_patches": _positive_int("n_patches"),
    "patch_size": _positive_int("patch_size"),
    "replace": bool,
    "padding": _one_of("padding", PADDINGS),
    "inference_sampling": _one_of("inference_sampling", INFERENCE_SAMPLING),
}


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class PatchSampler(keras.layers.Layer):
    """Samples cells of an attention map and cuts their full-resolution patches.

    Cell `(i, j)` of an `(h, w)` map over an `(H, W)` image is the `p x p`
    patch centred at `((i + 0.5) H / h, (j + 0.5) W / w)`. The patches are
    gathered pixel by pixel, so the cost is `O(B N p^2 C)` whatever the image
    size, and the full-resolution images may stay `uint8` (they are never
    cast as a whole; only the patches are).

    The sampler is the one owner of how cells are drawn: `sample` draws them
    and `draw_log_prob` gives the log-probability of a draw under the same
    scheme, which is what the policy gradient differentiates.

    Args:
        n_patches: number of patches `N` per image.
        patch_size: side `p` of the square patches, in full-resolution pixels.
        replace: sample with replacement (independent categorical draws, as in
            the reference notebook) or without (Gumbel-top-k, no cell twice).
        padding: `"reflect"` (mirror the image at its borders, as the
            reference notebook) or `"constant"`.
        fill_value: pixel value outside the image with `padding="constant"`.
        inference_sampling: what happens when `training` is false: `"sample"`
            draws as in training, `"top_k"` takes the `N` cells of highest
            attention, deterministically.
        seed: integer seed of the layer's `keras.random.SeedGenerator`.
        **kwargs: base layer arguments.

    Call arguments:
        - **inputs**: list `[attention, images]`: the attention map
          `(B, h, w)` (probabilities that sum to 1) and the full-resolution
          images `(B, H, W, C)`.
        - **training**: Python bool; see `inference_sampling`.
        - **return_cells**: also return the drawn cells.

    Returns:
        Tuple `(patches, sampled_attention, positions)`: patches
        `(B, N, p, p, C)` in the layer's compute dtype, the attention of each
        sampled cell `(B, N)` (float32) and the patch centres `(B, N, 2)` in
        full-resolution `(y, x)` pixels (float32). With `return_cells=True`,
        a fourth element: the flat cell indices `(B, N)` (int32) in draw
        order.

    Raises:
        ValueError: at build time, for ranks other than 3 and 4, different
            batch sizes, a patch larger than the image or `n_patches` larger
            than the number of cells without replacement.

    Examples:
        >>> import numpy as np
        >>> sampler = PatchSampler(n_patches=4, patch_size=8, seed=0)
        >>> attention = np.full((2, 4, 4), 1 / 16, "float32")
        >>> images = np.zeros((2, 32, 32, 3), "uint8")
        >>> patches, weights, positions, cells = sampler(
        ...     [attention, images], return_cells=True
        ... )
        >>> tuple(patches.shape), tuple(weights.shape), tuple(positions.shape)
        ((2, 4, 8, 8, 3), (2, 4), (2, 4, 2))
        >>> tuple(cells.shape)
        (2, 4)
    """

    def __init__(
        self,
        n_patches,
        patch_size,
        replace=True,
        padding="reflect",
        fill_value=0.0,
        inference_sampling="sample",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.n_patches = n_patches
        self.patch_size = patch_size
        self.replace = replace
        self.padding = padding
        self.fill_value = fill_value
        self.inference_sampling = inference_sampling
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def __setattr__(self, name, value):
        # One check for the constructor and for later writes (the model's
        # properties write here).
        if name in _CHECKS:
            value = _CHECKS[name](value)
        super().__setattr__(name, value)

    def build(self, input_shape):
        self._check_shapes(*input_shape)

    def _check_shapes(self, attention_shape, image_shape):
        name = f"PatchSampler '{self.name}'"
        if len(attention_shape) != 3:
            raise ValueError(
                f"{name} expects an attention map of rank 3 (B, h, w), got "
                f"shape {tuple(attention_shape)}."
            )
        if len(image_shape) != 4:
            raise ValueError(
                f"{name} expects images of rank 4 (B, H, W, C), got shape "
                f"{tuple(image_shape)}."
            )
        a_batch, b_batch = attention_shape[0], image_shape[0]
        if a_batch is not None and b_batch is not None and a_batch != b_batch:
            raise ValueError(
                f"{name}: the attention batch ({a_batch}) differs from the "
                f"image batch ({b_batch})."
            )
        height, width = image_shape[1], image_shape[2]
        for side, label in ((height, "height"), (width, "width")):
            if side is not None and self.patch_size > side:
                raise ValueError(
                    f"{name}: patch_size {self.patch_size} is larger than the "
                    f"image {label} {side} (image shape {tuple(image_shape)})."
                )
        map_h, map_w = attention_shape[1], attention_shape[2]
        if not self.replace and map_h is not None and map_w is not None:
            if self.n_patches > map_h * map_w:
                raise ValueError(
                    f"{name}: cannot draw {self.n_patches} patches without "
                    f"replacement from a {map_h}x{map_w} attention map "
                    f"({map_h * map_w} cells)."
                )

    def call(self, inputs, training=None, return_cells=False):
        attention, images = inputs
        self._check_shapes(attention.shape, images.shape)
        cells = self.sample(sampling.safe_log(attention), training=training)
        patches, sampled_attention, positions = self.extract(attention, images, cells)
        if return_cells:
            return patches, sampled_attention, positions, cells
        return patches, sampled_attention, positions

    def sample(self, log_probs, training=None):
        """Flat cell indices `(B, N)` drawn from log-probabilities `(B, h, w)`."""
        batch = ops.shape(log_probs)[0]
        flat = ops.reshape(log_probs, (batch, -1))
        if not training and self.inference_sampling == "top_k":
            return sampling.top_cells(flat, self.n_patches)
        return sampling.sample_cells(
            flat,
            self.n_patches,
            replace=self.replace,
            seed=sampling.salted(self.seed_generator),
        )

    def draw_log_prob(self, log_probs, cells):
        """Log-probability `(B, N)` of each drawn cell, given the draws before it.

        Computed under this sampler's scheme (`replace`), from
        log-probabilities `(B, h, w)` or `(B, K)`; see
        `sampling.draw_log_prob`.
        """
        batch = ops.shape(log_probs)[0]
        flat = ops.reshape(log_probs, (batch, -1))
        return sampling.draw_log_prob(flat, cells, replace=self.replace)

    def extract(self, attention, images, cells, image_index=None):
        """Patches, their attention and centres for given cells.

        `image_index` (optional, `(B,)`) says which image each row of
        `attention` and `cells` is drawn from; see `sampling.gather_patches`.
        """
        batch = ops.shape(attention)[0]
        map_shape = tuple(attention.shape[1:3])
        image_shape = tuple(images.shape[1:3])
        sampled_attention = ops.take_along_axis(
            ops.reshape(ops.cast(attention, "float32"), (batch, -1)), cells, axis=1
        )
        positions = sampling.cells_to_centres(cells, map_shape, image_shape)
        patches = sampling.gather_patches(
            images,
            positions,
            self.patch_size,
            self.padding,
            self.fill_value,
            image_index=image_index,
        )
        return ops.cast(patches, self.compute_dtype), sampled_attention, positions

    def compute_output_shape(self, input_shape):
        _, image_shape = input_shape
        batch, n, p = image_shape[0], self.n_patches, self.patch_size
        return (
            (batch, n, p, p, image_shape[3]),
            (batch, n),
            (batch, n, 2),
        )

    def compute_output_spec(self, inputs, training=None, return_cells=False):
        attention, images = inputs
        self._check_shapes(attention.shape, images.shape)
        shapes = self.compute_output_shape((attention.shape, images.shape))
        outputs = (
            keras.KerasTensor(shapes[0], self.compute_dtype),
            keras.KerasTensor(shapes[1], "float32"),
            keras.KerasTensor(shapes[2], "float32"),
        )
        if return_cells:
            outputs += (keras.KerasTensor(shapes[1], "int32"),)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "n_patches": self.n_patches,
                "patch_size": self.patch_size,
                "replace": self.replace,
                "padding": self.padding,
                "fill_value": self.fill_value,
                "inference_sampling": self.inference_sampling,
                "seed": self.seed,
            }
        )
        return config
