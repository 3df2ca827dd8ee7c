"""numpydoc validation of the public API's docstrings (as skrub's ``test_docstrings.py``).

Every public class and function of the public modules, and every public method of those
classes, is validated with ``numpydoc.validate.validate``. Every error code fails the test
except ES01 (no extended summary) and SA01 (no See Also section); for methods also EX01 (no
Examples section); and for a method a class inherits from a skfusion base without a docstring of
its own, GL08 (no docstring). Methods inherited from scikit-learn or Python (``get_params``,
``set_output``, ``with_traceback``, ...) are theirs to document and are not validated here.
"""

# SPDX-License-Identifier: BSD-3-Clause

import importlib
import inspect

import pytest
from numpydoc.validate import validate

PUBLIC_MODULES = [
    "skfusion",
    "skfusion.encoders",
    "skfusion.inspection",
    "skfusion.datasets",
    "skfusion.batch",
    "skfusion.io",
    "skfusion.storage",
    "skfusion.runtime",
    "skfusion.exceptions",
]
# RT02 ("the first line of the Returns section should contain only the type") is ignored as
# scikit-learn's own test_docstrings.py ignores it: skfusion follows scikit-learn's convention
# of naming what is returned (``self : object``, ``X_new : ndarray of shape ...``).
IGNORED = {"ES01", "SA01", "RT02"}
IGNORED_FOR_METHODS = IGNORED | {"EX01"}


def _public_objects():
    """``(import path, object, kind)`` of each public class, function and method, once each."""
    seen = set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in sorted(module.__all__):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)) or id(obj) in seen:
                continue
            seen.add(id(obj))
            path = f"{module_name}.{name}"
            yield path, obj, "class" if inspect.isclass(obj) else "function"
            if inspect.isclass(obj):
                for method in sorted(vars_of_class(obj)):
                    yield f"{path}.{method}", obj, "method"


def vars_of_class(cls):
    """The public methods of ``cls`` that skfusion writes: its own and those of skfusion base
    classes (those of scikit-learn's or Python's bases are theirs to document)."""
    names = []
    for name in dir(cls):
        if name.startswith("_") or not callable(getattr(cls, name, None)):
            continue
        owner = next((base for base in cls.__mro__ if name in vars(base)), None)
        if owner is not None and owner.__module__.split(".")[0] == "skfusion":
            names.append(name)
    return names


def _defined_in(cls, method):
    """Whether ``cls`` itself (not a base class) defines ``method``."""
    return method in vars(cls)


OBJECTS = list(_public_objects())


@pytest.mark.parametrize("path, owner, kind", OBJECTS, ids=[p for p, _, _ in OBJECTS])
def test_docstring(path, owner, kind):
    ignored = IGNORED_FOR_METHODS if kind == "method" else IGNORED
    method = path.rsplit(".", 1)[1]
    if kind == "method" and not _defined_in(owner, method):
        function = getattr(owner, method)
        if not inspect.getdoc(function):
            ignored = ignored | {"GL08"}
    result = validate(path)
    errors = [f"{code}: {message}" for code, message in result["errors"] if code not in ignored]
    assert not errors, f"{path} ({result['file']}:{result['file_line']}):\n" + "\n".join(errors)
