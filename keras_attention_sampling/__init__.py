"""Keras 3 attention sampling: classify megapixel images from a few patches.

An attention network reads a downscaled view and gives a 2-D distribution;
patches are sampled from the full-resolution image where it is high; a
feature network turns each patch into unit-norm logits; their
attention-weighted average is the prediction. The attention network is
trained through the unbiased expectation estimator or by entropy-regularised
REINFORCE (`kas.policy_gradient`), the rest by cross-entropy.
"""

from keras_attention_sampling import datasets, policy_gradient, sampling, visualize
from keras_attention_sampling.layers import (
    AttentionMap,
    AutoregressiveSampler,
    Downsample,
    ExpectationPool,
    NormalizedFeature,
    PatchSampler,
    SequenceHead,
    WeightedLogitPool,
    patch_backbone,
)
from keras_attention_sampling.models import AttentionSamplingModel, PolicyGradientModel
from keras_attention_sampling.policy_gradient import (
    PolicyGradientMixin,
    RewardBaseline,
    reference_settings,
)

__version__ = "0.2.0"

__all__ = [
    "AttentionMap",
    "AttentionSamplingModel",
    "AutoregressiveSampler",
    "Downsample",
    "ExpectationPool",
    "NormalizedFeature",
    "PatchSampler",
    "PolicyGradientMixin",
    "PolicyGradientModel",
    "RewardBaseline",
    "SequenceHead",
    "WeightedLogitPool",
    "datasets",
    "patch_backbone",
    "policy_gradient",
    "reference_settings",
    "sampling",
    "visualize",
]
