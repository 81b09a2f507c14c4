"""Settings: model attributes that one of the model's layers owns, and renamed
keywords that old files still use."""

import warnings


def drop_compiled_functions(model):
    """Forget the model's compiled steps (and `explain`'s forward pass):
    they hold settings as constants."""
    model.train_function = None
    model.test_function = None
    model.predict_function = None
    model.explain_function = None


class LayerSetting:
    """A model attribute that reads and writes a setting of one of its layers.

    The layer is the one owner of the value, so the model can never disagree
    with what its layers do. A write goes to the layer (which checks it) and
    drops the model's compiled train, test and predict functions, which were
    traced with the old value; the next `fit`, `evaluate` or `predict` traces
    anew.

    Args:
        layer: name of the model attribute that holds the layer.
        attribute: the layer's attribute; by default the model attribute's
            own name.
        writable: whether the model may write it (a seed, say, may not).
    """

    def __init__(self, layer, attribute=None, writable=True):
        self.layer = layer
        self.attribute = attribute
        self.writable = writable

    def __set_name__(self, owner, name):
        self.name = name
        self.attribute = self.attribute or name
        self.__doc__ = f"`{self.layer}.{self.attribute}`, read and written there."

    def __get__(self, model, owner=None):
        if model is None:
            return self
        return getattr(getattr(model, self.layer), self.attribute)

    def __set__(self, model, value):
        if not self.writable:
            raise AttributeError(
                f"{type(model).__name__}.{self.name} is fixed at construction "
                f"(it is `{self.layer}.{self.attribute}`)."
            )
        setattr(getattr(model, self.layer), self.attribute, value)
        drop_compiled_functions(model)


def renamed_keyword(owner, kwargs, old, new, value):
    """`kwargs.pop(old)` if a caller (or a file saved by an older release)
    still uses the old name of `new`, with a DeprecationWarning; else
    `value`."""
    if old not in kwargs:
        return value
    warnings.warn(
        f"{owner}: `{old}` is now called `{new}`.", DeprecationWarning, stacklevel=3
    )
    return kwargs.pop(old)
