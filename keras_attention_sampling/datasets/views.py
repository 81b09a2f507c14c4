"""The model's input with its view made on the host, outside the training step.

`AttentionSamplingModel` makes the view inside the step by default, which
reads every pixel of every image once per step. A loader can make it instead,
in parallel with training (`Downsample.host_view`, with Pillow), and a
whole-slide reader can return a pyramid level directly. The model takes the
result as `{"images": images, "view": view}`.
"""

from keras_attention_sampling.layers.downsample import Downsample


def with_views(images, scale):
    """`{"images": images, "view": Downsample(scale).host_view(images)}`.

    The input form of `AttentionSamplingModel` that skips the in-step
    downsampling.

    Args:
        images: `(B, H, W, C)` `uint8` array.
        scale: positive int, the model's `scale`.

    Returns:
        Dict of `images` (unchanged) and `view`, `(B, H // scale, W // scale,
        C)` `uint8`.

    Examples:
        >>> import numpy as np
        >>> inputs = with_views(np.zeros((2, 40, 60, 3), "uint8"), 10)
        >>> inputs["view"].shape
        (2, 4, 6, 3)
    """
    return {"images": images, "view": Downsample(scale).host_view(images)}
