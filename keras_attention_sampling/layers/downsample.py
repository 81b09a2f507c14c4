import keras

from keras_attention_sampling import sampling


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class Downsample(keras.layers.Layer):
    """The low-resolution view: images average-pooled by `scale`.

    The same values as `AveragePooling2D(scale)` on the images cast to float
    (`"valid"` pooling: the last `H mod scale` rows and `W mod scale` columns
    are dropped), computed by `sampling.downsample`, which never makes a float
    copy of the whole image. Use it in front of the attention network when
    composing your own graph; `AttentionSamplingModel` uses the same function.

    Args:
        scale: pooling factor in both directions (1 only casts).
        rescale: optional factor applied to the view, e.g. `1 / 255` for
            `uint8` images.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        - **images**: `(B, H, W, C)` tensor of any numeric dtype, typically
          `uint8` full-resolution images.

    Returns:
        `(B, H // scale, W // scale, C)` tensor in the layer's compute dtype.

    Examples:
        >>> import numpy as np
        >>> layer = Downsample(4, rescale=1 / 255)
        >>> view = layer(np.full((2, 64, 48, 3), 255, "uint8"))
        >>> tuple(view.shape)
        (2, 16, 12, 3)
        >>> float(keras.ops.convert_to_numpy(view).max())
        1.0
    """

    def __init__(self, scale, rescale=None, **kwargs):
        super().__init__(**kwargs)
        if int(scale) != scale or scale < 1:
            raise ValueError(f"Downsample: scale must be a positive int, got {scale}.")
        self.scale = int(scale)
        self.rescale = rescale
        self.built = True

    def call(self, images):
        view = sampling.downsample(images, self.scale, dtype=self.compute_dtype)
        if self.rescale is not None:
            view = view * keras.ops.cast(self.rescale, self.compute_dtype)
        return view

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        height = None if height is None else height // self.scale
        width = None if width is None else width // self.scale
        return (batch, height, width, channels)

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale, "rescale": self.rescale})
        return config
