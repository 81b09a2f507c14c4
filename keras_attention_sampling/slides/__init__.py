"""Whole-slide images from disk: read lazily, patches cut where the model looks.

Needs the `[slides]` extra (tifffile, zarr, imagecodecs). `open_slide`
wraps a pyramidal TIFF-based slide (SVS, OME-TIFF, BigTIFF, NDPI as far as
tifffile reads it) whose regions decode only the tiles they touch.
"""

from keras_attention_sampling.slides.dataset import SlideDataset
from keras_attention_sampling.slides.index import SlideIndex, index_slides
from keras_attention_sampling.slides.inputs import (
    as_slide_dataset,
    explain_slides,
    is_slide_data,
)
from keras_attention_sampling.slides.slide import (
    MAX_CHUNK_BYTES,
    ArraySlide,
    Slide,
    SlideError,
    SlideLevel,
    open_slide,
)

__all__ = [
    "MAX_CHUNK_BYTES",
    "ArraySlide",
    "Slide",
    "SlideDataset",
    "SlideError",
    "SlideIndex",
    "SlideLevel",
    "as_slide_dataset",
    "explain_slides",
    "index_slides",
    "is_slide_data",
    "open_slide",
]
