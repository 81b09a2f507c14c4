"""Per-backend gradient plumbing: differentiate `policy_step`, apply the gradients."""

import functools

import jax
import keras


def _current_values(scope, variables, values):
    # Variables the step did not assign keep the values they came in with.
    updated = []
    for variable, value in zip(variables, values):
        new_value = scope.get_current_value(variable)
        updated.append(value if new_value is None else new_value)
    return updated


def _stateless_policy_step(
    model, trainable, non_trainable, metrics, data, training, optimizer_variables=()
):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    # The optimiser's variables are read (its step, by an entropy schedule;
    # its loss scale), never written, by the step.
    optimizer = list(model.optimizer.variables) if optimizer_variables else []
    mapping = (
        list(zip(model.trainable_variables, trainable))
        + list(zip(model.non_trainable_variables, non_trainable))
        + list(zip(model.metrics_variables, metrics))
        + list(zip(optimizer, optimizer_variables))
    )
    with keras.StatelessScope(state_mapping=mapping) as scope:
        loss = model.policy_step(x, y, sample_weight, training=training)
        if training:
            loss = model.optimizer.scale_loss(loss)
    non_trainable = _current_values(scope, model.non_trainable_variables, non_trainable)
    metrics = _current_values(scope, model.metrics_variables, metrics)
    return loss, (non_trainable, metrics)


def _logs(model, metrics):
    mapping = list(zip(model.metrics_variables, metrics))
    with keras.StatelessScope(state_mapping=mapping):
        return model.get_metrics_result()


def train_step(model, state, data):
    trainable, non_trainable, optimizer_variables, metrics = state

    def loss_fn(trainable, non_trainable, metrics):
        return _stateless_policy_step(
            model,
            trainable,
            non_trainable,
            metrics,
            data,
            training=True,
            optimizer_variables=optimizer_variables,
        )

    (_, (non_trainable, metrics)), gradients = jax.value_and_grad(
        loss_fn, has_aux=True
    )(trainable, non_trainable, metrics)
    trainable, optimizer_variables = model.optimizer.stateless_apply(
        optimizer_variables, gradients, trainable
    )
    state = (trainable, non_trainable, optimizer_variables, metrics)
    return _logs(model, metrics), state


def test_step(model, state, data):
    trainable, non_trainable, metrics = state
    _, (non_trainable, metrics) = _stateless_policy_step(
        model, trainable, non_trainable, metrics, data, training=False
    )
    return _logs(model, metrics), (trainable, non_trainable, metrics)


def explain_function(model):
    """`model.policy_forward` in inference mode as one compiled program.

    Run eagerly, JAX compiles each operation on its own the first time it
    meets a shape: a first `explain` of 100 needle images took 15.6 s
    eagerly and 2.7 s compiled (Intel Xeon, 2 cores). Compiled or not, it draws the
    same cells and leaves the seed state where an eager call leaves it.
    Like `predict`, it runs eagerly under `run_eagerly` or without
    `jit_compile`.
    """
    if model.run_eagerly or not model.jit_compile:
        return functools.partial(model.policy_forward, training=False)

    @jax.jit
    def forward(trainable, non_trainable, inputs):
        mapping = list(zip(model.trainable_variables, trainable)) + list(
            zip(model.non_trainable_variables, non_trainable)
        )
        with keras.StatelessScope(state_mapping=mapping) as scope:
            outputs = model.policy_forward(inputs, training=False)
        return outputs, _current_values(
            scope, model.non_trainable_variables, non_trainable
        )

    def run(inputs):
        outputs, non_trainable = forward(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            inputs,
        )
        # The seed generators' states move on, as an eager call moves them.
        for variable, value in zip(model.non_trainable_variables, non_trainable):
            variable.assign(value)
        return outputs

    return run


def predict_step(model, state, data):
    # One program over the global batch: nothing to salt or reduce.
    return keras.Model.predict_step(model, state, data)
