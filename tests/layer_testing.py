"""A small layer-test helper in the spirit of keras-hub's `run_layer_test`.

`keras.testing` is not public, so the package keeps its own: every layer is
checked for output shapes against `compute_output_shape` and a symbolic call
on `keras.Input`, its weight counts, config and JSON round-trips, a `.keras`
save/load inside a functional model, one `fit` step, and its documented
output dtypes under `mixed_float16` and `mixed_bfloat16`.
"""

import json
import os

import keras
import numpy as np


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def without_build_config(config, top=True):
    # A nested layer's config gains a build_config once built; it says
    # nothing about the constructor arguments being compared. JSON
    # normalises tuples to lists.
    if top:
        config = json.loads(json.dumps(config))
    if isinstance(config, dict):
        return {
            k: without_build_config(v, False)
            for k, v in config.items()
            if k != "build_config"
        }
    if isinstance(config, list):
        return [without_build_config(v, False) for v in config]
    return config


def _numpy(value):
    return [keras.ops.convert_to_numpy(v) for v in _as_list(value)]


def gradient(function, value):
    """d sum(function(value)) / d value, with the active backend's autodiff
    (zeros where the output does not depend on the value)."""
    return gradients(function, value)[0]


def gradients(function, *values):
    """d sum(function(*values)) / d each value, with the active backend's
    autodiff (zeros where the output does not depend on a value)."""
    return value_and_gradients(lambda *v: (function(*v), ()), *values)[1]


def value_and_gradients(function, *values):
    """`function(*values)` returns `(out, aux)`: `aux` as numpy, and
    d sum(out) / d each value, from one forward pass with the active
    backend's autodiff (zeros where `out` does not depend on a value)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        variables = [tf.Variable(v) for v in values]
        with tf.GradientTape() as tape:
            out, aux = function(*variables)
            out = tf.reduce_sum(out)
        zero = tf.UnconnectedGradients.ZERO
        grads = tape.gradient(out, variables, unconnected_gradients=zero)
        grads = [tf.convert_to_tensor(g).numpy() for g in grads]  # gathers give slices
        return _numpy_tree(aux), grads
    if backend == "jax":
        import jax

        def total(*v):
            out, aux = function(*v)
            return out.sum(), aux

        argnums = tuple(range(len(values)))
        grads, aux = jax.grad(total, argnums=argnums, has_aux=True)(*values)
        return _numpy_tree(aux), [np.asarray(g) for g in grads]
    import torch

    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    out, aux = function(*tensors)
    out = out.sum()
    aux = _numpy_tree(aux)  # convert_to_numpy detaches
    if not out.requires_grad:
        return aux, [np.zeros(v.shape, np.float32) for v in values]
    out.backward()
    return aux, [
        np.zeros(v.shape, np.float32) if t.grad is None else t.grad.numpy()
        for v, t in zip(values, tensors)
    ]


def _numpy_tree(structure):
    return keras.tree.map_structure(keras.ops.convert_to_numpy, structure)


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    tmp_path,
    call_kwargs=None,
    deterministic=True,
    trainable=True,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    output_dtypes=None,
):
    """Runs the shared checks on `layer_cls(**init_kwargs)`.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments.
        input_data: a numpy array or a list of them.
        expected_output_shape: shape (or list of shapes) of the output.
        tmp_path: a pytest `tmp_path` for the saved model.
        call_kwargs: extra call arguments.
        deterministic: compare outputs before and after save/load.
        trainable: run one `fit` step and check that weights move.
        expected_num_trainable_weights: checked once the layer is built.
        expected_num_non_trainable_weights: likewise.
        output_dtypes: the documented dtype of each output under a mixed
            policy: `"float32"`, or `"compute"` for the policy's compute
            dtype. Checked under `mixed_float16` and `mixed_bfloat16`; None
            skips the check.
    """
    call_kwargs = call_kwargs or {}
    layer = layer_cls(**init_kwargs)
    output = layer(input_data, **call_kwargs)
    shapes = [tuple(o.shape) for o in _as_list(output)]
    expected = (
        [tuple(s) for s in expected_output_shape]
        if isinstance(expected_output_shape, list)
        else [tuple(expected_output_shape)]
    )
    assert shapes == expected, (shapes, expected)

    input_shapes = [np.shape(d) for d in _as_list(input_data)]
    computed = layer.compute_output_shape(
        input_shapes if isinstance(input_data, list) else input_shapes[0]
    )
    computed = computed if isinstance(expected_output_shape, list) else [computed]
    assert [tuple(c) for c in computed] == expected, (computed, expected)

    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights

    # A symbolic call on keras.Input gives the same shapes, batch left open.
    symbolic_inputs = [
        keras.Input(shape[1:], dtype=np.asarray(d).dtype.name)
        for shape, d in zip(input_shapes, _as_list(input_data))
    ]
    symbolic = layer_cls(**init_kwargs)(
        symbolic_inputs if isinstance(input_data, list) else symbolic_inputs[0],
        **call_kwargs,
    )
    symbolic_shapes = [tuple(o.shape) for o in _as_list(symbolic)]
    assert symbolic_shapes == [(None, *shape[1:]) for shape in expected], (
        symbolic_shapes
    )

    # Every constructor argument must come back from the config.
    config = layer.get_config()
    for key in init_kwargs:
        assert key in config, f"{layer_cls.__name__}.get_config lacks {key!r}"
    revived = layer_cls.from_config(config)
    assert without_build_config(revived.get_config()) == without_build_config(config)

    serialized = json.dumps(keras.saving.serialize_keras_object(layer))
    from_json = keras.saving.deserialize_keras_object(json.loads(serialized))
    assert isinstance(from_json, layer_cls)
    assert without_build_config(from_json.get_config()) == without_build_config(config)

    # Saved inside a functional model, the layer comes back with its weights.
    inputs = [
        keras.Input(shape[1:], dtype=np.asarray(d).dtype.name)
        for shape, d in zip(input_shapes, _as_list(input_data))
    ]
    model_input = inputs if isinstance(input_data, list) else inputs[0]
    model = keras.Model(inputs, layer_cls(**init_kwargs)(model_input, **call_kwargs))
    before = _numpy(model(input_data))
    path = os.path.join(tmp_path, f"{layer_cls.__name__}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    after = _numpy(loaded(input_data))
    assert [a.shape for a in after] == [b.shape for b in before]
    if deterministic:
        for a, b in zip(after, before):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

    if trainable:
        first = _as_list(model.outputs)[0]
        trainer = keras.Model(inputs, first)
        trainer.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        weights = [np.array(w) for w in trainer.trainable_weights]
        assert weights, f"{layer_cls.__name__} has no trainable weights"
        target = np.random.default_rng(0).normal(size=tuple(first.shape[1:]))
        target = np.broadcast_to(target, (len(_as_list(input_data)[0]),) + target.shape)
        trainer.fit(input_data, target, epochs=1, verbose=0)
        moved = [
            not np.allclose(a, np.array(b))
            for a, b in zip(weights, trainer.trainable_weights)
        ]
        assert any(moved), f"{layer_cls.__name__}: one fit step changed no weight"

    for policy in ("mixed_float16", "mixed_bfloat16") if output_dtypes else ():
        mixed = layer_cls(**init_kwargs, dtype=policy)
        mixed_output = _as_list(mixed(input_data, **call_kwargs))
        assert len(mixed_output) == len(output_dtypes)
        for value, documented in zip(mixed_output, output_dtypes):
            expected_dtype = (
                mixed.compute_dtype if documented == "compute" else documented
            )
            assert keras.backend.standardize_dtype(value.dtype) == expected_dtype, (
                f"{layer_cls.__name__} under {policy}: output dtype {value.dtype}, "
                f"documented {expected_dtype}"
            )
            as_float = keras.ops.convert_to_numpy(keras.ops.cast(value, "float32"))
            assert np.all(np.isfinite(as_float))
    return layer
