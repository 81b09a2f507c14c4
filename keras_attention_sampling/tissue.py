"""Where the tissue is: a mask of the view that keeps attention off bare glass.

A whole slide is mostly empty glass, which is white or grey: its colour
channels are nearly equal. Stained tissue is coloured. The mask thresholds
each view pixel's chroma, `max(R, G, B) - min(R, G, B)`, at Otsu's threshold
(the one that maximises the between-class variance of the two sides; Otsu,
1979), computed per image on a histogram. Otsu splits any image in two, even
one that is all tissue, so the threshold is capped at `glass_chroma`: a
pixel more coloured than that is always tissue. Chroma is unchanged by an
offset and scales with `rescale`, so the mask is the same for every
normalisation of the view; `glass_chroma` is in units of the full pixel
range (0.1 is 10% of it).
"""

from keras import ops


def tissue_mask(view, pixel_range=1.0, glass_chroma=0.1, bins=64):
    """`True` where a view pixel is tissue, by Otsu's threshold on chroma.

    Args:
        view: `(B, h, w, 3)` RGB view, in any normalisation.
        pixel_range: the width of the view's pixel range (1 for the
            package's default normalisation, 255 for raw pixels).
        glass_chroma: the cap of the threshold, as a share of `pixel_range`.
        bins: histogram bins of the threshold search.

    Returns:
        bool `(B, h, w)`. An image without a single pixel above its
        threshold keeps every pixel, so the attention stays a distribution.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> view = np.full((1, 2, 3, 3), 0.9, "float32")  # glass...
        >>> view[0, 1, 2] = (0.8, 0.3, 0.6)  # ...and one stained pixel
        >>> ops.convert_to_numpy(tissue_mask(view)).astype(int).tolist()
        [[[0, 0, 0], [0, 0, 1]]]
    """
    if view.shape[-1] != 3:
        raise ValueError(
            f"tissue_mask needs an RGB view (B, h, w, 3), got shape {tuple(view.shape)}."
        )
    view = ops.cast(view, "float32")
    chroma = (ops.max(view, axis=-1) - ops.min(view, axis=-1)) / pixel_range
    batch, height, width = ops.shape(chroma)
    flat = ops.reshape(chroma, (batch, height * width))
    # Histogram of each image's chroma on [0, 1] (a pixel range is at most 1
    # wide in chroma), by one segment sum over image-major bin ids.
    bin_of = ops.cast(ops.clip(flat * bins, 0, bins - 1), "int32")
    ids = bin_of + ops.arange(batch, dtype="int32")[:, None] * bins
    counts = ops.segment_sum(
        ops.reshape(ops.ones_like(flat), (-1,)),
        ops.reshape(ids, (-1,)),
        num_segments=batch * bins,
    )
    counts = ops.reshape(counts, (batch, bins))
    centres = (ops.arange(bins, dtype="float32") + 0.5) / bins
    # Between-class variance of every split "bins [0, t] | (t, bins)".
    weight_low = ops.cumsum(counts, axis=-1)
    weight_high = ops.sum(counts, axis=-1, keepdims=True) - weight_low
    mass_low = ops.cumsum(counts * centres, axis=-1)
    mass_high = ops.sum(counts * centres, axis=-1, keepdims=True) - mass_low
    mean_low = mass_low / ops.maximum(weight_low, 1.0)
    mean_high = mass_high / ops.maximum(weight_high, 1.0)
    between = weight_low * weight_high * ops.square(mean_low - mean_high)
    split = ops.argmax(between, axis=-1)
    threshold = ops.cast(split + 1, "float32") / bins
    threshold = ops.minimum(threshold, glass_chroma)
    mask = flat > threshold[:, None]
    none = ops.logical_not(ops.any(mask, axis=-1, keepdims=True))
    return ops.reshape(ops.logical_or(mask, none), (batch, height, width))
