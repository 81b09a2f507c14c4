"""Runs every `>>>` example in the package's docstrings, so they cannot rot.

One test per docstring that has examples, collected from every module of
`keras_attention_sampling` (the per-backend plumbing modules only for the
active backend). Examples run in their module's namespace, as `python -m
doctest` would run them, with `ELLIPSIS` and `NORMALIZE_WHITESPACE`.
"""

import doctest
import importlib
import pkgutil

import keras
import pytest

import keras_attention_sampling

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
PACKAGE = keras_attention_sampling.__name__


def _module_names():
    names = [PACKAGE]
    for info in pkgutil.walk_packages(
        keras_attention_sampling.__path__, prefix=PACKAGE + "."
    ):
        names.append(info.name)
    # Each backend's gradient plumbing imports its backend: only the active one.
    plumbing = {
        f"{PACKAGE}.policy_gradient._{b}" for b in ("tensorflow", "jax", "torch")
    }
    active = f"{PACKAGE}.policy_gradient._{keras.backend.backend()}"
    return sorted(name for name in names if name not in plumbing or name == active)


def _import(name):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        # An optional third-party dependency (e.g. matplotlib) is missing.
        if error.name and not error.name.startswith(PACKAGE):
            return error
        raise


def _collect():
    finder = doctest.DocTestFinder(exclude_empty=True)
    params = []
    for name in _module_names():
        module = _import(name)
        if isinstance(module, ModuleNotFoundError):
            params.append(
                pytest.param(
                    None,
                    id=name,
                    marks=pytest.mark.skip(reason=f"needs {module.name}"),
                )
            )
            continue
        # The finder keeps only objects defined in `module` itself, so a
        # docstring re-exported by a package `__init__` is run once.
        for test in finder.find(module, name):
            if test.examples:
                params.append(pytest.param(test, id=test.name))
    return params


@pytest.mark.parametrize("test", _collect())
def test_docstring_examples(test):
    report = []
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    result = runner.run(test, out=report.append)
    if result.failed:
        pytest.fail("".join(report), pytrace=False)
