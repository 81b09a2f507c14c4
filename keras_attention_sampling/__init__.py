"""Keras 3 attention sampling: classify megapixel images from a few patches.

An attention network reads a downscaled view and gives a 2-D distribution;
patches are sampled from the full-resolution image where it is high; a
feature network turns each patch into unit-norm logits; their
attention-weighted average is the prediction. The attention network is
trained through the unbiased expectation estimator or by entropy-regularised
REINFORCE (`kas.policy_gradient`), the rest by cross-entropy.
"""

from keras_attention_sampling import (
    datasets,
    policy_gradient,
    sampling,
    tissue,
    visualize,
)
from keras_attention_sampling.layers import (
    AttentionMap,
    AutoregressiveSampler,
    Downsample,
    ExpectationPool,
    NormalizedFeature,
    PatchSampler,
    SequenceHead,
    TissueMask,
    WeightedLogitPool,
    default_logit_scale,
    patch_backbone,
)
from keras_attention_sampling.models import AttentionSamplingModel, PolicyGradientModel
from keras_attention_sampling.policy_gradient import (
    PolicyGradientMixin,
    RewardBaseline,
    reference_settings,
)

__version__ = "0.2.0"


def __getattr__(name):
    # `kas.slides` needs the [slides] extra; it is imported on first use.
    if name == "slides":
        import importlib

        return importlib.import_module("keras_attention_sampling.slides")
    raise AttributeError(f"module 'keras_attention_sampling' has no attribute {name!r}")


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
    "TissueMask",
    "WeightedLogitPool",
    "datasets",
    "default_logit_scale",
    "patch_backbone",
    "policy_gradient",
    "reference_settings",
    "sampling",
    "slides",
    "tissue",
    "visualize",
]
