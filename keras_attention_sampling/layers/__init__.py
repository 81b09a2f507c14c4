from keras_attention_sampling.layers.attention_map import AttentionMap
from keras_attention_sampling.layers.autoregressive_sampler import AutoregressiveSampler
from keras_attention_sampling.layers.downsample import Downsample
from keras_attention_sampling.layers.expectation_pool import ExpectationPool
from keras_attention_sampling.layers.normalized_feature import (
    NormalizedFeature,
    patch_backbone,
)
from keras_attention_sampling.layers.patch_sampler import PatchSampler
from keras_attention_sampling.layers.sequence_head import SequenceHead
from keras_attention_sampling.layers.tissue_mask import TissueMask
from keras_attention_sampling.layers.weighted_logit_pool import (
    WeightedLogitPool,
    default_logit_scale,
)
