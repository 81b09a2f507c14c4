import keras

from keras_attention_sampling import tissue


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class TissueMask(keras.layers.Layer):
    """Which cells of a view show tissue: attention kept off bare glass.

    Thresholds each view pixel's chroma (`max - min` over RGB) at Otsu's
    threshold, capped at `glass_chroma` (see `kas.tissue.tissue_mask`).
    Given to `AttentionSamplingModel(tissue_mask=...)`, it restricts the
    attention map to the tissue: the map is renormalised over the tissue
    cells, so sampling, the log-probabilities of the policy gradient and the
    entropy all use the restricted map. It has no weights and is saved with
    the model's settings.

    Args:
        glass_chroma: the threshold's cap, as a share of the pixel range: a
            pixel whose channels differ by more is always tissue.
        pixel_range: the width of the views' pixel range (255 for the
            `[0, 255]` pixels the model takes).
        bins: histogram bins of Otsu's threshold.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        - **view**: `(B, h, w, 3)` RGB views, pixel values in
          `[0, pixel_range]`.

    Returns:
        bool `(B, h, w)`, `True` on tissue (every cell of an image without
        any pixel above the threshold).

    Examples:
        >>> import numpy as np
        >>> view = np.full((1, 2, 2, 3), 240, "uint8")  # glass...
        >>> view[0, 0, 1] = (200, 90, 160)  # ...and stained tissue
        >>> mask = TissueMask()(view)
        >>> keras.ops.convert_to_numpy(mask).tolist()
        [[[False, True], [False, False]]]
    """

    def __init__(self, glass_chroma=0.1, pixel_range=255.0, bins=64, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < glass_chroma <= 1.0:
            raise ValueError(
                "TissueMask: glass_chroma must be in (0, 1]. Received: "
                f"glass_chroma={glass_chroma!r}"
            )
        if not pixel_range > 0:
            raise ValueError(
                "TissueMask: pixel_range must be positive. Received: "
                f"pixel_range={pixel_range!r}"
            )
        if int(bins) < 2:
            raise ValueError(f"TissueMask: bins must be at least 2. Received: {bins!r}")
        self.glass_chroma = float(glass_chroma)
        self.pixel_range = float(pixel_range)
        self.bins = int(bins)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] != 3:
            raise ValueError(
                f"TissueMask '{self.name}' expects RGB views (B, h, w, 3), got "
                f"shape {tuple(input_shape)}."
            )

    def call(self, view):
        return tissue.tissue_mask(
            view,
            pixel_range=self.pixel_range,
            glass_chroma=self.glass_chroma,
            bins=self.bins,
        )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3])

    def compute_output_spec(self, view):
        return keras.KerasTensor(self.compute_output_shape(view.shape), "bool")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "glass_chroma": self.glass_chroma,
                "pixel_range": self.pixel_range,
                "bins": self.bins,
            }
        )
        return config
