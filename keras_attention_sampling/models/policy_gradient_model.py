import keras

from keras_attention_sampling import sampling
from keras_attention_sampling.layers.expectation_pool import ExpectationPool
from keras_attention_sampling.layers.patch_sampler import PatchSampler
from keras_attention_sampling.policy_gradient.trainer import (
    POLICY_ARGUMENTS,
    PolicyGradientMixin,
    repeat_batch,
)


class _Unsaved:
    # Holds an object without letting Keras track (and save) it twice.
    def __init__(self, value):
        self.value = value


class _WithCells(keras.layers.Layer):
    """A `PatchSampler` called with `return_cells=True`, as a layer of its own.

    A functional graph sizes a layer's outputs by its first call, so a graph
    that outputs the cells needs a layer whose calls all return them. The
    sampler (and its seed state) is shared, not copied.
    """

    def __init__(self, sampler):
        super().__init__(name=f"{sampler.name}_with_cells", dtype=sampler.dtype_policy)
        self.sampler = sampler

    def call(self, inputs, training=None):
        return self.sampler(inputs, training=training, return_cells=True)

    def compute_output_spec(self, inputs, training=None):
        return self.sampler.compute_output_spec(inputs, return_cells=True)


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class PolicyGradientModel(PolicyGradientMixin, keras.Model):
    """A functional model of the package's layers, trained by policy gradient.

    Wire `Downsample`, `AttentionMap`, `PatchSampler`, `NormalizedFeature` and
    `WeightedLogitPool` (or your own parts around them) into a functional
    graph, then build this model from its inputs and outputs. It finds the
    model's single `PatchSampler` and trains the network that produced its
    attention input as `AttentionSamplingModel` does: through the
    expectation estimator when the graph pools with an `ExpectationPool`, by
    entropy-regularised REINFORCE when it pools with a `WeightedLogitPool`
    (the graph decides, unless `estimator` is given); everything else is
    trained by the compiled loss.
    The cells the policy gradient learns from are the ones the sampler drew
    for the prediction, handed out by the sampler itself.

    Args:
        inputs: the functional inputs (the full-resolution images).
        outputs: the prediction, a `(B, classes)` tensor.
        **kwargs: the policy-gradient settings of `PolicyGradientMixin`
            (`estimator`, `reward`, `baseline`, `baseline_momentum`,
            `entropy_weight`, `samples_per_image`), then `keras.Model` arguments (`name`, ...).

    Returns:
        A `keras.Model`; `compile` takes an extra `attention_optimizer`.

    Raises:
        ValueError: if the graph has no `PatchSampler`, or more than one.

    Examples:
        >>> import keras, numpy as np
        >>> import keras_attention_sampling as kas
        >>> images = keras.Input((64, 64, 3))
        >>> view = kas.Downsample(8)(images)
        >>> attention = kas.AttentionMap(blocks=1)(view)
        >>> patches, weights, _ = kas.PatchSampler(2, 16, seed=1)([attention, images])
        >>> features = kas.NormalizedFeature(3)(patches)
        >>> outputs = kas.WeightedLogitPool(3.0)([features, weights])
        >>> model = kas.PolicyGradientModel(images, outputs, samples_per_image=2)
        >>> model.compile(metrics=["accuracy"])
        >>> x = np.random.rand(4, 64, 64, 3).astype("float32")
        >>> history = model.fit(x, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'entropy', 'loss', 'reward']
    """

    def __init__(self, inputs, outputs, **kwargs):
        super().__init__(inputs, outputs, **kwargs)
        samplers = [layer for layer in self.layers if isinstance(layer, PatchSampler)]
        if len(samplers) != 1:
            raise ValueError(
                "PolicyGradientModel needs exactly one PatchSampler in its graph, "
                f"found {len(samplers)}."
            )
        sampler = samplers[0]
        self._check_estimator(sampler)
        attention = sampler.input[0]
        self._sampler = _Unsaved(sampler)
        self._policy_view = _Unsaved(self._graph_with_draws(sampler))
        self._attention_network = _Unsaved(keras.Model(self.inputs, attention))

    def _check_estimator(self, sampler):
        pools = [layer for layer in self.layers if isinstance(layer, ExpectationPool)]
        # The graph decides by default: an ExpectationPool in it is the
        # expectation estimator, a WeightedLogitPool is REINFORCE.
        self._resolve_estimator(bool(pools))
        if self.estimator == "expectation" and not pools:
            raise ValueError(
                "PolicyGradientModel: estimator='expectation' needs an "
                "ExpectationPool in the graph."
            )
        if self.estimator == "reinforce" and pools:
            raise ValueError(
                "PolicyGradientModel: the graph has an ExpectationPool; use "
                "estimator='expectation' (REINFORCE would train the attention "
                "twice)."
            )
        for pool in pools:
            if pool.replace != sampler.replace:
                raise ValueError(
                    f"PolicyGradientModel: the ExpectationPool '{pool.name}' has "
                    f"replace={pool.replace}, but the PatchSampler draws with "
                    f"replace={sampler.replace}; give both the same."
                )

    def _graph_with_draws(self, sampler):
        """The same graph, same layers, that also outputs the sampler's draws.

        Every layer is called as in the user's graph, except that the sampler
        is called through `_WithCells`, which asks it for its cells too; the
        graph downstream still gets the outputs it was built with.
        """
        with_cells = _WithCells(sampler)
        drawn = {}

        def call(layer, *args, **kwargs):
            if layer is not sampler:
                return layer(*args, **kwargs)
            return_cells = kwargs.pop("return_cells", False)
            outputs = with_cells(*args, **kwargs)
            drawn["attention"] = (args[0] if args else kwargs["inputs"])[0]
            drawn["cells"] = outputs[3]
            return outputs if return_cells else outputs[:3]

        graph = keras.models.clone_model(
            keras.Model(self.inputs, self.outputs),
            clone_function=lambda layer: layer,
            call_function=call,
        )
        return keras.Model(
            graph.inputs, [graph.outputs[0], drawn["attention"], drawn["cells"]]
        )

    def attention_variables(self):
        """Trainable variables of the network that produces the attention."""
        return self._attention_network.value.trainable_variables

    def policy_forward(self, x, training=False, samples_per_image=1):
        if samples_per_image > 1:
            # The graph is the user's, so the whole input is repeated.
            x = repeat_batch(x, samples_per_image)
        y_pred, attention, cells = self._policy_view.value(x, training=training)
        log_attention = sampling.safe_log(attention)
        return {
            "y_pred": y_pred,
            "log_attention": log_attention,
            "draw_log_probs": self._sampler.value.draw_log_prob(log_attention, cells),
        }

    def get_config(self):
        # Keras serialises the graph only for plain functional constructors,
        # so the graph is described by a plain functional model over it.
        config = keras.Model(self.inputs, self.outputs, name=self.name).get_config()
        config.update(self._policy_config())
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        policy = {key: config.pop(key) for key in POLICY_ARGUMENTS if key in config}
        graph = keras.Model.from_config(config, custom_objects=custom_objects)
        return cls(graph.inputs, graph.outputs, name=graph.name, **policy)
