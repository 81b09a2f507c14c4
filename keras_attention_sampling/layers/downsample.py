import keras
import numpy as np
from keras import ops
from PIL import Image


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class Downsample(keras.layers.Layer):
    """The view: images average-pooled by `scale`, for the attention network.

    The same values as `AveragePooling2D(scale)` on the images cast to float
    (`"valid"` pooling: the last `H mod scale` rows and `W mod scale` columns
    are dropped), without a float copy of the whole image: the `scale` rows
    of each output row are summed one slice at a time, each slice cast on its
    own, so only a `1 / scale` image is ever float. Sums are kept in float32
    whatever the compute dtype (400 pixels of 255 overflow float16).
    `AttentionSamplingModel` owns one of these layers; put one in front of
    the attention network when composing a graph of your own.

    `host_view` computes the same view on the host, with Pillow, for a loader
    that hands the model `{"images": images, "view": view}`.

    Args:
        scale: pooling factor in both directions (1 only casts).
        rescale: optional factor applied to the view. Kept for graphs saved
            by release 0.1; new graphs normalise with one
            `keras.layers.Rescaling` shared by the view and the patches.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        - **images**: `(B, H, W, C)` tensor of any numeric dtype, typically
          `uint8` full-resolution images.

    Returns:
        `(B, H // scale, W // scale, C)` tensor in the layer's compute dtype.

    Examples:
        >>> import numpy as np
        >>> layer = Downsample(2)
        >>> images = np.arange(2 * 4 * 6, dtype="uint8").reshape(2, 4, 6, 1)
        >>> view = layer(images)
        >>> tuple(view.shape)
        (2, 2, 3, 1)
        >>> float(keras.ops.convert_to_numpy(view)[0, 0, 0, 0])  # 0, 1, 6, 7
        3.5
        >>> layer.host_view(images).shape  # the same view, made with Pillow
        (2, 2, 3, 1)
    """

    def __init__(self, scale, rescale=None, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.rescale = rescale
        self.built = True

    def __setattr__(self, name, value):
        # One check for the constructor and for later writes (the model's
        # `scale` property writes here).
        if name == "scale":
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(
                    f"Downsample: scale must be positive and whole. Received: "
                    f"scale={value!r}"
                )
            value = int(value)
        super().__setattr__(name, value)

    def call(self, images):
        _, height, width, channels = ops.shape(images)
        rows, cols = height // self.scale, width // self.scale
        if self.scale == 1:
            view = ops.cast(images, self.compute_dtype)
        else:
            images = images[:, : rows * self.scale, : cols * self.scale, :]
            # (B, rows, scale, cols * scale * C): output row r sums the slices
            # [:, r, i] for i < scale.
            stacked = ops.reshape(
                images, (-1, rows, self.scale, cols * self.scale * channels)
            )
            total = ops.cast(stacked[:, :, 0], "float32")
            for i in range(1, self.scale):
                total = total + ops.cast(stacked[:, :, i], "float32")
            total = ops.reshape(total, (-1, rows, cols, self.scale, channels))
            view = ops.sum(total, axis=3) * (1.0 / (self.scale * self.scale))
            view = ops.cast(view, self.compute_dtype)
        if self.rescale is not None:
            view = view * ops.cast(self.rescale, self.compute_dtype)
        return view

    def host_view(self, images):
        """The same view of `uint8` images, computed on the host by Pillow.

        `Image.reduce` averages the boxes in C, channel by channel, and
        rounds to `uint8`, so it differs from `call` by at most half a grey
        level. `rescale` is not applied: the model normalises the view it is
        given.

        Args:
            images: `(B, H, W, C)` or `(H, W, C)` `uint8` array.

        Returns:
            `uint8` array `(B, H // scale, W // scale, C)` (or without `B`).
        """
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ValueError(
                f"Downsample.host_view: images must be uint8. Received: {images.dtype}"
            )
        if images.ndim == 3:
            return self.host_view(images[None])[0]
        if images.ndim != 4:
            raise ValueError(
                "Downsample.host_view: expected (B, H, W, C) or (H, W, C) images. "
                f"Received: shape {images.shape}"
            )
        batch, height, width, channels = images.shape
        rows, cols = self.compute_output_shape(images.shape)[1:3]
        view = np.empty((batch, rows, cols, channels), np.uint8)
        for b in range(batch):
            for c in range(channels):
                # Mode "L" per channel: faster than Pillow's "RGB" reduce,
                # and "RGBA" would weight colour by alpha.
                plane = Image.fromarray(np.ascontiguousarray(images[b, :, :, c]))
                plane = plane.crop((0, 0, cols * self.scale, rows * self.scale))
                view[b, :, :, c] = np.asarray(plane.reduce(self.scale))
        return view

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "Downsample expects images of rank 4 (B, H, W, C). Received: "
                f"shape {tuple(input_shape)}"
            )
        batch, height, width, channels = input_shape
        for side in (height, width):
            if side is not None and side < self.scale:
                raise ValueError(
                    f"Downsample: images of {height}x{width} are smaller than the "
                    f"scale {self.scale}."
                )
        height = None if height is None else height // self.scale
        width = None if width is None else width // self.scale
        return (batch, height, width, channels)

    def compute_output_spec(self, images):
        shape = self.compute_output_shape(images.shape)
        return keras.KerasTensor(shape, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale, "rescale": self.rescale})
        return config
