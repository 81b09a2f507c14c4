"""Data loading, splitting, augmentation and synthetic data.

* `index_image_folder` indexes a folder with one subfolder per class
  (the IICBU lymphoma layout, flat or nested one level deeper);
* `ImageSequence` streams batches from it (or from
  `SyntheticLymphoma`) as a ``keras.utils.PyDataset``;
* `split_random` / `split_by_group` make stratified image-level
  or slide-level splits;
* `Augment` augments ``uint8`` batches on the host with numpy;
* `with_views` makes the model's view on the host, outside the training
  step;
* `textured_needles`, `needle_pairs` and `MegapixelDigits` are learning
  tasks whose evidence is small and local: a textured patch on noise, two
  that must agree, and Megapixel MNIST.
"""

from keras_attention_sampling.datasets.augment import Augment
from keras_attention_sampling.datasets.image_folder import (
    IMAGE_EXTENSIONS,
    ImageFolderIndex,
    fit_to_size,
    index_image_folder,
    read_image,
    read_image_size,
    slide_id_from_path,
)
from keras_attention_sampling.datasets.megapixel_digits import MegapixelDigits
from keras_attention_sampling.datasets.needles import (
    NEEDLE_CLASSES,
    needle_pairs,
    textured_needles,
)
from keras_attention_sampling.datasets.sequence import ImageSequence, ImageSource
from keras_attention_sampling.datasets.splits import split_by_group, split_random
from keras_attention_sampling.datasets.synthetic import (
    SYNTHETIC_CLASS_NAMES,
    SyntheticLymphoma,
    SyntheticSample,
    make_synthetic_lymphoma,
)
from keras_attention_sampling.datasets.views import with_views

__all__ = [
    "IMAGE_EXTENSIONS",
    "NEEDLE_CLASSES",
    "SYNTHETIC_CLASS_NAMES",
    "Augment",
    "ImageFolderIndex",
    "ImageSequence",
    "ImageSource",
    "MegapixelDigits",
    "SyntheticLymphoma",
    "SyntheticSample",
    "fit_to_size",
    "index_image_folder",
    "make_synthetic_lymphoma",
    "needle_pairs",
    "read_image",
    "read_image_size",
    "slide_id_from_path",
    "split_by_group",
    "split_random",
    "textured_needles",
    "with_views",
]
