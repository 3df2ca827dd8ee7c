"""Content hashing, in one place: SHA-256 of bytes, strings, files and folders, and digests
of Python values.

The model store records and checks the SHA-256 of its entries, the embedding cache keys rows by
a digest of the encoder's fingerprint and the raw item, encoders fingerprint their model files
and parameters, and :func:`skfusion.io.file_sha256` prints what ``sha256sum`` prints: all of
them go through the helpers here. File digests are memoised per process by path, size,
modification time and inode, so fingerprinting a model folder reads it once.

:func:`value_hash` digests a value by what it holds, never by how it prints (numpy elides the
middle of long arrays and rounds floats when printing them): arrays by their dtype, shape and
bytes, floats by their exact value and type, estimators by their class and parameters.
"""

# SPDX-License-Identifier: BSD-3-Clause

import functools
import hashlib
import os
import pickle
import threading
import types
from collections import namedtuple
from pathlib import Path

__all__ = [
    "UnhashableValueError",
    "content_hash",
    "file_sha256",
    "new_hash",
    "sha256_hex",
    "tree_hash",
    "value_hash",
]

_BLOCK = 1 << 20
_file_digests = {}  # absolute path -> ((size, mtime_ns, inode), raw digest)
_file_lock = threading.Lock()


def new_hash(data=b""):
    """A new SHA-256 hash object, optionally fed ``data`` (``hashlib.sha256``)."""
    return hashlib.sha256(data)


def sha256_hex(data):
    """SHA-256 hex digest of a bytes-like object.

    Examples
    --------
    >>> from skfusion.storage._hashing import sha256_hex
    >>> sha256_hex(b"")[:16]
    'e3b0c44298fc1c14'
    """
    return hashlib.sha256(data).hexdigest()


def _update_from_file(digest, path):
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest


def file_sha256(path):
    """SHA-256 hex digest of a file's bytes (what ``sha256sum`` prints), read in 1 MiB blocks.

    Examples
    --------
    >>> import os, tempfile
    >>> from skfusion.storage._hashing import file_sha256
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "empty")
    ...     open(path, "wb").close()
    ...     file_sha256(path)[:16]
    'e3b0c44298fc1c14'
    """
    return _update_from_file(hashlib.sha256(), path).hexdigest()


def file_digest(path):
    """Raw SHA-256 digest of a file's bytes, memoised by (path, size, mtime, inode)."""
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    signature = (st.st_size, st.st_mtime_ns, st.st_ino)
    with _file_lock:
        known = _file_digests.get(path)
    if known is not None and known[0] == signature:
        return known[1]
    digest = _update_from_file(hashlib.sha256(), path).digest()
    with _file_lock:
        _file_digests[path] = (signature, digest)
    return digest


def tree_hash(path, *, skip=None):
    """SHA-256 hex digest of a file's bytes, or of every file under a folder (relative names
    included), memoised per file (see :func:`file_digest`).

    ``skip(name) -> bool``, if given, leaves out the files and sub-folders whose name it
    accepts (for example hidden files and READMEs of a model folder).

    Examples
    --------
    >>> import os, tempfile
    >>> from skfusion.storage._hashing import tree_hash
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with open(os.path.join(tmp, "w.bin"), "wb") as fh:
    ...         _ = fh.write(b"weights")
    ...     before = tree_hash(tmp)
    ...     os.rename(os.path.join(tmp, "w.bin"), os.path.join(tmp, "v.bin"))
    ...     before == tree_hash(tmp)
    False
    """
    path = os.fspath(path)
    digest = hashlib.sha256()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if skip is None or not skip(d))
            for name in sorted(files):
                if skip is not None and skip(name):
                    continue
                full = os.path.join(root, name)
                digest.update(os.path.relpath(full, path).replace(os.sep, "/").encode())
                digest.update(b"\0")
                digest.update(file_digest(full))
    else:
        digest.update(file_digest(path))
    return digest.hexdigest()


def content_hash(*parts):
    """SHA-256 hex digest of byte strings, strings and files, in order.

    Parameters
    ----------
    *parts : bytes, str or pathlib.Path
        Bytes are hashed as they are, a ``str`` as UTF-8 text, a ``Path`` by its file content.

    Returns
    -------
    digest : str
        64 hex characters.

    Examples
    --------
    >>> from skfusion.storage._hashing import content_hash
    >>> len(content_hash(b"model bytes", "opset=17"))
    64
    >>> content_hash(b"a", "b") == content_hash(b"a", "b") != content_hash(b"ab")
    True
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(b"file\0")
            _update_from_file(digest, part)
        elif isinstance(part, str):
            digest.update(b"str\0" + part.encode("utf-8"))
        else:
            digest.update(b"bytes\0" + bytes(part))
        digest.update(b"\0")
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# digests of values
# --------------------------------------------------------------------------------------------
class UnhashableValueError(TypeError):
    """A value that :func:`value_hash` cannot digest by content (it cannot be pickled)."""


# What :func:`value_hash` puts in place of estimators, functions, dicts and sets before
# hashing. They are module-level classes, pickled by reference, so no user value can be
# mistaken for them.
_Estimator = namedtuple("_Estimator", ["cls", "params"])
_Function = namedtuple("_Function", ["name", "code", "defaults", "kwdefaults", "closure"])
_Partial = namedtuple("_Partial", ["func", "args", "keywords"])
_Method = namedtuple("_Method", ["func", "owner"])
_Code = namedtuple("_Code", ["code", "names", "varnames", "consts"])
_Cycle = namedtuple("_Cycle", ["name"])
_EmptyCell = namedtuple("_EmptyCell", [])
_Dict = namedtuple("_Dict", ["items"])
_Set = namedtuple("_Set", ["items"])

# values that joblib.hash digests exactly and deterministically as they are
_PLAIN = (type(None), bool, int, float, complex, str, bytes)


def _code_state(code):
    """A function's code by what it does (bytecode, names, constants), not where it is (file
    name and line numbers are left out: the same function in another checkout hashes alike)."""
    consts = tuple(_code_state(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return _Code(code.co_code, code.co_names, code.co_varnames, consts)


def _joblib_hash(value):
    import joblib

    return joblib.hash(value, hash_name="sha1")


def _canonical(value, seen):
    """``value`` with estimators, functions, partials and bound methods replaced by what
    identifies them, and dicts and sets by their items in an order that does not depend on
    the process (joblib orders keys it cannot sort by ``hash()``, which differs between
    processes for strings), inside lists, tuples, dicts and sets."""
    import numpy as np

    if isinstance(value, _PLAIN + (type, np.generic, np.dtype)):
        return value  # a class: pickled by reference (module and name)
    if isinstance(value, np.ndarray) and not value.dtype.hasobject:
        return value  # joblib: dtype, shape and bytes
    get_params = getattr(value, "get_params", None)
    if callable(get_params):
        # an estimator by its class and (recursively) its parameters: what it learnt in fit,
        # and lazy state such as a runtime session, is not part of its configuration
        cls = type(value)
        return _Estimator(
            f"{cls.__module__}.{cls.__qualname__}", _canonical(get_params(deep=False), seen)
        )
    if isinstance(value, types.FunctionType):
        name = f"{value.__module__}.{value.__qualname__}"
        if id(value) in seen:  # a recursive closure
            return _Cycle(name)
        seen = seen | {id(value)}
        closure = []
        for cell in value.__closure__ or ():
            try:
                closure.append(_canonical(cell.cell_contents, seen))
            except ValueError:  # a cell not yet filled
                closure.append(_EmptyCell())
        return _Function(
            name,
            _code_state(value.__code__),
            _canonical(value.__defaults__, seen),
            _canonical(value.__kwdefaults__, seen),
            tuple(closure),
        )
    if isinstance(value, functools.partial):
        return _Partial(
            _canonical(value.func, seen),
            _canonical(value.args, seen),
            _canonical(value.keywords, seen),
        )
    if isinstance(value, types.MethodType):
        # the bound object whole (its state may decide what the method returns)
        return _Method(_canonical(value.__func__, seen), _picklable(value.__self__))
    if type(value) in (list, tuple):
        return type(value)(_canonical(v, seen) for v in value)
    if type(value) is dict:
        pairs = [(_canonical(k, seen), _canonical(v, seen)) for k, v in value.items()]
        return _Dict(tuple(sorted(pairs, key=lambda pair: _joblib_hash(pair[0]))))
    if type(value) in (set, frozenset):
        return _Set(tuple(sorted((_canonical(v, seen) for v in value), key=_joblib_hash)))
    return _picklable(value)


def _picklable(value):
    """``value``, once the standard pickler has shown that it can pickle all of it: joblib's
    hasher retries a dict whose value fails to pickle and may then digest a partial stream."""
    pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return value


def value_hash(value):
    """Hex digest of a value by its content, the same in every process and run.

    Estimators are hashed by their class and ``get_params(deep=False)``, recursively (a
    ``Pipeline``'s steps, an estimator parameter's own parameters); functions by their
    qualified name, bytecode, constants, defaults and closure values; everything else by
    :func:`joblib.hash`, which hashes arrays by dtype, shape and bytes, floats by their exact
    value and type, and dicts and sets whatever their order. Nothing goes through ``repr``.

    Parameters
    ----------
    value : object
        Any picklable value, with estimators and functions anywhere inside lists, tuples and
        dicts.

    Returns
    -------
    digest : str
        40 hex characters.

    Raises
    ------
    UnhashableValueError
        The value holds something that cannot be pickled (a lock, an open file...).

    Examples
    --------
    >>> import numpy as np
    >>> from skfusion.storage._hashing import value_hash
    >>> a = np.linspace(0, 1, 2000)
    >>> b = a.copy()
    >>> b[1000] += 0.5
    >>> repr(a) == repr(b), value_hash(a) == value_hash(b)
    (True, False)
    >>> value_hash(0.1 + 0.2) == value_hash(0.3)
    False
    """
    try:
        return _joblib_hash(_canonical(value, frozenset()))
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
        raise UnhashableValueError(
            f"cannot hash {type(value).__name__} value by its content: {exc}"
        ) from exc
