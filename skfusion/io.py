"""Model files: :func:`dump` and :func:`load`, joblib or skops by extension, with a SHA-256 sidecar.

Two formats, chosen by the file's extension:

* ``.joblib`` (also ``.pkl``/``.pickle`` when loading): Python's pickle, through joblib. Fast and
  able to save anything, but **loading a pickle runs whatever code the file names**: load only
  files that you (or someone you trust as much as your own code) made.
* ``.skops``: the `skops <https://skops.readthedocs.io>`_ format, a zip of JSON and arrays that
  is loaded without running code from the file. Every type the file holds is checked before
  anything is built: skfusion's own classes, scikit-learn estimators and cross-validation
  splitters, and numpy/scipy data types are trusted by default; anything else is refused with
  the list of those types, unless ``trusted=`` names them. Use it for files from elsewhere.

Beside every file, :func:`dump` writes ``<file>.sha256`` in ``sha256sum`` format (``sha256sum
-c model.skops.sha256`` checks it). :func:`load` refuses a file whose hash differs from the
``sha256=`` it is given or, when none is given, from its sidecar (a corrupt or half-copied
file).
"""

# SPDX-License-Identifier: BSD-3-Clause

import importlib
import io
import os
import pickle
import re
import sys
from pathlib import Path

from .exceptions import ModelFileError, UntrustedTypesError
from .storage._hashing import sha256_hex
from .storage._files import write_atomic

__all__ = [
    "check_sha256",
    "dump",
    "file_sha256",
    "load",
]

_FORMATS = {".joblib": "joblib", ".pkl": "joblib", ".pickle": "joblib", ".skops": "skops"}
SIDECAR_SUFFIX = ".sha256"
# packages whose live objects hold native handles that skops cannot save (its attempt to
# rebuild an ONNX Runtime session aborts the interpreter instead of raising)
_LIVE_PACKAGES = ("onnxruntime", "tokenizers", "torch", "sentence_transformers", "transformers")
_HEX = re.compile(r"[0-9a-f]{64}")


class _NoTorch:
    """Import hook that makes ``import torch`` fail (see :func:`_import_skops`)."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"{name} is not imported while skops loads", name=name)
        return None


def _import_skops():
    """``skops.io``, imported without importing torch.

    skops builds its list of trusted types with ``sklearn.utils.all_estimators()``, whose
    ``pkgutil.walk_packages`` imports every sklearn package, including the vendored
    ``array_api_compat.torch``, which imports torch when it is installed (about 250 MB and a
    second or two). Scoring needs none of it, so torch is hidden while skops is imported;
    walk_packages skips packages that fail to import. Later imports of torch are unaffected.
    """
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    hook = None if "torch" in sys.modules else _NoTorch()
    if hook is not None:
        sys.meta_path.insert(0, hook)
    try:
        import skops.io
    finally:
        if hook is not None:
            sys.meta_path.remove(hook)
    return skops.io


def _format_of(path):
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(
            f"cannot tell the model file format of {os.fspath(path)!r} from its extension: use "
            "'.skops' (safe to load from anyone) or '.joblib' (pickle: only your own files)."
        )
    return _FORMATS[suffix]


def _sidecar(path):
    return Path(os.fspath(path) + SIDECAR_SUFFIX)


def file_sha256(path):
    """SHA-256 of a file, as ``sha256sum`` prints it.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    digest : str
        64 lowercase hex digits.

    Examples
    --------
    >>> import os, tempfile
    >>> from skfusion.io import file_sha256
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "empty")
    ...     open(path, "wb").close()
    ...     file_sha256(path)
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    """
    from .storage._hashing import file_sha256 as sha256_of_file  # the one hashing helper

    return sha256_of_file(path)


def _clean_digest(value, what):
    text = str(value).strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    text = text.split()[0] if text else text  # a `sha256sum` line: "<hex>  <name>"
    if not _HEX.fullmatch(text):
        raise ValueError(f"{what} must be 64 hex digits (a SHA-256); got {value!r}.")
    return text


def check_sha256(path, digest, sha256=None):
    """Refuse a model file whose SHA-256 is not the expected one.

    The expected hash is ``sha256`` when given, else the one in the file's sidecar when it
    has one; with neither, nothing is checked.

    Parameters
    ----------
    path : str or path-like
        The model file (its sidecar is ``<path>.sha256``).
    digest : str
        The file's SHA-256, as computed from the bytes that will be loaded.
    sha256 : str, default=None
        The expected SHA-256 (64 hex digits, optionally a ``sha256:`` prefix or a
        ``sha256sum`` line).

    Raises
    ------
    ModelFileError
        When the hashes differ.

    Examples
    --------
    >>> from skfusion.io import check_sha256
    >>> check_sha256("model.skops", "ab" * 32, "AB" * 32)  # same hash, any case: no error
    """
    path = Path(path)
    if sha256 is not None:
        expected = _clean_digest(sha256, "sha256")
        if digest != expected:
            raise ModelFileError(
                f"{path}: its SHA-256 is {digest}, not the expected {expected}; the file was "
                "changed or damaged, so it is not loaded."
            )
    elif _sidecar(path).is_file():
        expected = _clean_digest(_sidecar(path).read_text(), f"the sidecar {_sidecar(path)}")
        if digest != expected:
            raise ModelFileError(
                f"{path}: its SHA-256 is {digest}, but its sidecar {_sidecar(path).name} says "
                f"{expected}; the file was changed or damaged after it was saved, so it is not "
                "loaded."
            )


class _NullSink:
    def write(self, data):
        return len(data)


def _check_no_live_objects(model):
    """Raise a TypeError if ``model`` holds an ONNX Runtime, tokenizers or torch object.

    skops cannot save such objects, and for some (an ``InferenceSession``) it aborts the
    interpreter instead of raising. A dry run of pickle over the same ``__getstate__`` walk
    finds them first. Large buffers are not copied (protocol 5, out of band).
    """
    found = []

    class _Finder(pickle.Pickler):
        def persistent_id(self, obj):
            module = type(obj).__module__ or ""
            if module.split(".", 1)[0] in _LIVE_PACKAGES:
                found.append(f"{module}.{type(obj).__qualname__}")
                return "skipped"  # do not descend into it
            return None

    try:
        _Finder(_NullSink(), protocol=5, buffer_callback=lambda buffer: None).dump(model)
    except Exception:  # pickle itself fails on something: leave the verdict to skops
        pass
    if found:
        raise TypeError(
            f"cannot save this model in the skops format: it holds live objects "
            f"{sorted(set(found))!r} (an ONNX Runtime session, a tokenizer or a torch object). "
            "An estimator must drop them in __getstate__ and rebuild them on first use; "
            "skfusion's encoders do. Save it as '.joblib' if the object is picklable."
        )


def dump(model, path):
    """Save a model to ``path`` (``.skops`` or ``.joblib``) and a SHA-256 sidecar beside it.

    The file is written to a temporary name and renamed into place, so a crash never leaves
    a half-written model under ``path``. The sidecar ``<path>.sha256`` has the format of
    ``sha256sum``.

    Read more in the :ref:`User Guide <batch_scoring>`.

    Parameters
    ----------
    model : object
        A fitted estimator (any object for ``.joblib``).
    path : str or path-like
        Destination. ``.skops``: the skops format, safe to load from untrusted sources.
        ``.joblib``: pickle through joblib, for your own files.

    Returns
    -------
    sha256 : str
        The file's SHA-256, to pass to :func:`load` (``sha256=``) or ``skfusion predict
        --sha256`` where the file is used.

    Raises
    ------
    ValueError
        When the extension is neither ``.skops`` nor ``.joblib``.
    TypeError
        For ``.skops``, when the model holds live ONNX Runtime, tokenizers or torch objects
        (skops cannot save them).

    See Also
    --------
    load : Load the file back, verifying its hash and, for skops, its types.

    Examples
    --------
    >>> import os, tempfile
    >>> from sklearn.linear_model import LogisticRegression
    >>> import skfusion
    >>> model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     digest = skfusion.dump(model, os.path.join(tmp, "model.skops"))
    ...     sorted(os.listdir(tmp))
    ...     loaded = skfusion.load(os.path.join(tmp, "model.skops"), sha256=digest)
    ['model.skops', 'model.skops.sha256']
    >>> loaded.predict([[0.9]])
    array([1])
    """
    fmt = _format_of(path)
    path = Path(path)
    if fmt == "skops":
        _check_no_live_objects(model)
        skops_io = _import_skops()

        def write(fh):
            fh.write(skops_io.dumps(model))

    else:
        import joblib

        def write(fh):
            joblib.dump(model, fh)

    write_atomic(path, write, private=False)
    digest = file_sha256(path)
    line = f"{digest}  {path.name}\n".encode()
    write_atomic(_sidecar(path), lambda fh: fh.write(line), private=False)
    return digest


def _resolve(name):
    """The object a full type name refers to, or None when it cannot be imported."""
    module, _, attr = name.rpartition(".")
    if not module:
        return None
    try:
        return getattr(importlib.import_module(module), attr, None)
    except Exception:  # noqa: BLE001 - any import failure means "not a type we know"
        return None


def _trusted_by_default(name):
    """Whether a type found in a skops file is trusted without ``trusted=``.

    Trusted: classes defined by skfusion; scikit-learn estimators, cross-validation splitters
    and ``Bunch``; numpy scalar types, dtypes and random generators; scipy sparse containers.
    Functions (which a ``FunctionTransformer`` would call) and other packages' types are not.
    """
    top = name.split(".", 1)[0]
    if top not in ("skfusion", "sklearn", "numpy", "scipy"):
        return False
    obj = _resolve(name)
    if not isinstance(obj, type) or not (obj.__module__ or "").startswith(top):
        return False
    if top == "skfusion":
        return True
    if top == "sklearn":
        from sklearn.base import BaseEstimator
        from sklearn.model_selection import BaseCrossValidator, BaseShuffleSplit
        from sklearn.utils import Bunch

        return issubclass(obj, (BaseEstimator, BaseCrossValidator, BaseShuffleSplit, Bunch))
    if top == "numpy":
        import numpy as np

        return issubclass(
            obj, (np.generic, np.dtype, np.random.RandomState, np.random.Generator,
                  np.random.BitGenerator)
        )
    import scipy.sparse

    return issubclass(obj, (scipy.sparse.spmatrix, scipy.sparse.sparray))


def _type_names(trusted):
    names = []
    for item in trusted:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, type):
            names.append(f"{item.__module__}.{item.__name__}")
        else:
            raise TypeError(f"trusted must hold type names (str) or types; got {item!r}.")
    return names


def _load_skops(data, path, trusted):
    skops_io = _import_skops()
    extra = set(_type_names(trusted or ()))
    try:
        found = skops_io.get_untrusted_types(data=data)
    except Exception as exc:
        raise ModelFileError(
            f"{path} is not a readable skops file ({type(exc).__name__}: {exc})."
        ) from exc
    refused = [name for name in found if name not in extra and not _trusted_by_default(name)]
    if refused:
        raise UntrustedTypesError(path, refused)
    model = skops_io.loads(data, trusted=found)
    _share_equal_bytes(model)
    return model


def _share_equal_bytes(model, min_size=1 << 20):
    """Make equal large ``bytes`` attributes one object (in place).

    skops saves each reference to a bytes object on its own, so two encoders that held one
    ONNX model come back with two equal copies; ONNX Runtime sessions are shared per bytes
    object (:class:`skfusion.runtime.LazySession`), so one object also means one session.
    """
    from sklearn.base import BaseEstimator

    seen, stack, kept = set(), [model], {}

    def shared(value):
        if not isinstance(value, bytes) or len(value) < min_size:
            return value
        key = (len(value), sha256_hex(value[:4096]))
        for other in kept.setdefault(key, []):
            if other is value or other == value:
                return other
        kept[key].append(value)
        return value

    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, list):
            obj[:] = [shared(v) for v in obj]
            stack.extend(obj)
        elif isinstance(obj, tuple):
            stack.extend(obj)
        elif isinstance(obj, dict):
            for key, value in obj.items():
                obj[key] = shared(value)
            stack.extend(obj.values())
        elif hasattr(obj, "__dict__") and (
            isinstance(obj, BaseEstimator) or type(obj).__module__.startswith("skfusion.")
        ):
            stack.append(vars(obj))


def load(path, *, sha256=None, trusted=None):
    """Load a model saved by :func:`dump` (or any joblib/skops file), after checking it.

    Checks, before anything in the file is built:

    1. its SHA-256 equals ``sha256`` when given, else the one in its sidecar
       ``<path>.sha256`` when there is one;
    2. for ``.skops``, that every type it holds is trusted: skfusion's classes,
       scikit-learn estimators and splitters and numpy/scipy data types by default, plus
       ``trusted``.

    A ``.joblib`` file is a pickle: loading it runs whatever code it names, and no check on
    its content is possible. Load only your own ``.joblib`` files; use ``.skops`` for files
    from elsewhere, and ``sha256=`` to be sure the file is the one you expect.

    Read more in the :ref:`User Guide <batch_scoring>`.

    Parameters
    ----------
    path : str or path-like
        A ``.skops`` or ``.joblib`` (``.pkl``, ``.pickle``) file.
    sha256 : str, default=None
        The expected SHA-256 (64 hex digits, as :func:`dump` returns it or ``sha256sum``
        prints it). ``None`` checks against the sidecar when it exists.
    trusted : list of str or type, default=None
        ``.skops`` only: types to trust besides the default ones, by full name as listed in
        the refusal message (e.g. ``["mypackage.scalers.MyScaler"]``).

    Returns
    -------
    model : object
        The loaded model. ONNX Runtime sessions and tokenizers are rebuilt on first use.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ModelFileError
        When the hash differs, or the file is corrupt or not in its extension's format.
    UntrustedTypesError
        When a ``.skops`` file holds types that are not trusted.

    See Also
    --------
    dump : Save a model and its sidecar.
    skfusion.batch.BatchPredictor : Score files or DataFrame partitions with a saved model.

    Examples
    --------
    >>> import os, tempfile
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> import skfusion
    >>> from skfusion.io import UntrustedTypesError
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "model.skops")
    ...     _ = skfusion.dump(FunctionTransformer(os.getcwd), path)
    ...     try:
    ...         skfusion.load(path)
    ...     except UntrustedTypesError as exc:
    ...         print(exc.types)
    ['posix.getcwd']
    """
    fmt = _format_of(path)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {os.fspath(path)!r} does not exist.")
    if fmt == "joblib" and trusted is not None:
        raise ValueError(
            "trusted= applies to '.skops' files: a '.joblib' file is a pickle, which runs any "
            "code it holds when loaded, so no type check is possible. Load only your own "
            "'.joblib' files."
        )
    data = path.read_bytes()  # read once: what is checked is what is loaded
    check_sha256(path, sha256_hex(data), sha256)
    if not data:
        raise ModelFileError(f"{path} is empty (0 bytes).")
    if fmt == "skops":
        try:
            return _load_skops(data, path, trusted)
        except (ModelFileError, ModuleNotFoundError):
            raise
        except Exception as exc:
            raise ModelFileError(
                f"{path} could not be loaded as a skops file ({type(exc).__name__}: {exc})."
            ) from exc
    import joblib

    try:
        return joblib.load(io.BytesIO(data))
    except ModuleNotFoundError:
        raise
    except Exception as exc:
        raise ModelFileError(
            f"{path} is not a readable joblib file ({type(exc).__name__}: {exc})."
        ) from exc
