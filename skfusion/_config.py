"""Configuration of skfusion: the embedding cache and progress bars.

As scikit-learn's, the configuration is **per thread**: :func:`set_config` and
:func:`config_context` change the calling thread's settings only, so two threads (two fits
running side by side, a web server's requests) never see each other's changes. A key that the
thread has not set takes its value from an environment variable, read when it is needed, and
otherwise from the built-in default:

========================  =================================  ===================================
key                       environment variable (default)     meaning
========================  =================================  ===================================
``cache``                 ``SKFUSION_CACHE``                 ``"0"``/``"false"``/``"off"`` turns
                                                             the embedding cache off
``cache_dir``             ``SKFUSION_CACHE_DIR``             folder of the on-disk layer (unset:
                                                             no disk layer)
``cache_max_bytes``       ``SKFUSION_CACHE_MAX_BYTES``       memory budget of the in-memory
                                                             layer (``"512MB"``, ``"2G"`` or
                                                             bytes)
``cache_disk_max_bytes``  ``SKFUSION_CACHE_DISK_MAX_BYTES``  size bound of the on-disk layer,
                                                             per cache folder (default 4 GiB;
                                                             least recently used chunks go
                                                             first)
``show_progress``         ``SKFUSION_SHOW_PROGRESS``         ``"1"``/``"true"``/``"on"`` shows
                                                             progress bars while encoding
                                                             (default off)
========================  =================================  ===================================

Precedence: :func:`set_config` / :func:`config_context` in this thread, then the environment,
then the defaults. skfusion never writes the environment variables: they are defaults that a
user sets (in the shell, or in ``os.environ`` before worker processes start).

skfusion's own parallel work (fusion estimators over their modalities, encoders decoding files,
:func:`skfusion.inspection.modality_importance`) runs through :mod:`skfusion._parallel`, which
carries the calling thread's configuration into the joblib workers, threads or processes, as
:mod:`sklearn.utils.parallel` carries scikit-learn's. Workers that another library dispatches
(``GridSearchCV(n_jobs=...)``, a dask cluster's tasks) start from the environment and the
defaults.
"""

# SPDX-License-Identifier: BSD-3-Clause

import os
import re
import threading
from contextlib import contextmanager

__all__ = ["config_context", "get_config", "set_config"]

_DEFAULTS = {
    "cache": True,
    "cache_dir": None,
    "cache_max_bytes": 512 * 2**20,
    "cache_disk_max_bytes": 4 * 2**30,
    "show_progress": False,
}

_ENV = {
    "cache": "SKFUSION_CACHE",
    "cache_dir": "SKFUSION_CACHE_DIR",
    "cache_max_bytes": "SKFUSION_CACHE_MAX_BYTES",
    "cache_disk_max_bytes": "SKFUSION_CACHE_DISK_MAX_BYTES",
    "show_progress": "SKFUSION_SHOW_PROGRESS",
}

# The values set in each thread with set_config / config_context (sklearn's _config.py pattern).
_threadlocal = threading.local()


def _get_threadlocal_config():
    """The calling thread's **mutable** dict of explicitly set keys (empty in a new thread)."""
    if not hasattr(_threadlocal, "explicit"):
        _threadlocal.explicit = {}
    return _threadlocal.explicit


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30}


_BOOL_KEYS = ("cache", "show_progress")
_BYTES_KEYS = ("cache_max_bytes", "cache_disk_max_bytes")


def _parse_bool(text, name="SKFUSION_CACHE"):
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{name} must be 0/1/true/false/on/off; got {text!r}.")


def _parse_bytes(text, name="cache_max_bytes"):
    if isinstance(text, bool):
        raise ValueError(f"{name} must be a number of bytes; got {text!r}.")
    if isinstance(text, (int, float)):
        value = int(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(
                f"{name} must be a number of bytes or a size like '512MB' or '2G'; "
                f"got {text!r}."
            )
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value < 0:
        raise ValueError(f"{name} must be >= 0; got {text!r}.")
    return value


_PARSE = {
    "cache": _parse_bool,
    "cache_dir": lambda text: text or None,
    "cache_max_bytes": _parse_bytes,
    "cache_disk_max_bytes": lambda text: _parse_bytes(text, "SKFUSION_CACHE_DISK_MAX_BYTES"),
    "show_progress": lambda text: _parse_bool(text, "SKFUSION_SHOW_PROGRESS"),
}


def _check(key, value):
    """Validate a value given to set_config and return it normalised."""
    if value is None:
        if key in _BOOL_KEYS:
            raise ValueError(f"{key} must be True or False, not None.")
        if key in _BYTES_KEYS:
            raise ValueError(f"{key} must be a number of bytes, not None.")
        return None
    if key in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise TypeError(f"{key} must be True or False; got {value!r}.")
        return value
    if key == "cache_dir":
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be a str, a path or None; got {value!r}.")
        return os.path.abspath(os.path.expanduser(os.fspath(value)))
    return _parse_bytes(value, key)


def get_config():
    """The current skfusion configuration.

    Returns
    -------
    config : dict
        ``cache`` (bool), ``cache_dir`` (str or None), ``cache_max_bytes`` (int),
        ``cache_disk_max_bytes`` (int) and ``show_progress`` (bool), resolved from
        :func:`set_config` / :func:`config_context` in the calling thread, the ``SKFUSION_*``
        environment variables and the defaults, in that order. A new dict at every call:
        changing it changes nothing.

    See Also
    --------
    set_config : Change the configuration.
    config_context : Change it temporarily.

    Examples
    --------
    >>> import skfusion
    >>> sorted(skfusion.get_config())
    ['cache', 'cache_dir', 'cache_disk_max_bytes', 'cache_max_bytes', 'show_progress']
    """
    explicit = _get_threadlocal_config()
    config = {}
    for key, default in _DEFAULTS.items():
        if key in explicit:
            config[key] = explicit[key]
            continue
        text = os.environ.get(_ENV[key])
        config[key] = default if text is None else _PARSE[key](text)
    return config


_PARAMETERS = """\
    cache : bool, default=None
        Turn the embedding cache on or off.

    cache_dir : str or path-like, default=None
        Folder of the on-disk cache layer, shared by processes. Pass ``""`` to turn the disk
        layer off.

    cache_max_bytes : int or str, default=None
        Memory budget of the in-memory layer (least recently used rows are evicted), e.g.
        ``2**30`` or ``"1GB"``.

    cache_disk_max_bytes : int or str, default=None
        Size bound of the on-disk layer, per cache folder (one folder per encoder
        configuration): when a write takes a folder over it, the least recently used chunks are
        deleted. The default bound is 4 GiB.

    show_progress : bool, default=None
        Show progress bars (``tqdm``) while encoders work through long inputs. Off by default.
"""


def set_config(cache=None, cache_dir=None, cache_max_bytes=None, cache_disk_max_bytes=None,
               show_progress=None, **unset):
    """Change skfusion's configuration in the calling thread.

    Arguments left at ``None`` are not changed. As with :func:`sklearn.set_config`, the change
    holds in this thread only: other threads keep their own settings, and threads started
    afterwards begin from the environment variables and the defaults. skfusion's parallel work
    carries the caller's settings into its joblib workers (threads or processes); workers that
    another library dispatches (``GridSearchCV(n_jobs=...)``, a dask cluster) read the
    ``SKFUSION_*`` environment variables instead, so set those before they start. Nothing is
    written to the environment.

    Read more in the :ref:`User Guide <embedding_cache>`.

    Parameters
    ----------
{parameters}
    **unset : dict
        Unknown keys raise a ``TypeError``.

    See Also
    --------
    get_config : The current configuration.
    config_context : A temporary change.

    Examples
    --------
    >>> import skfusion
    >>> skfusion.set_config(cache_max_bytes="64MB")
    >>> skfusion.get_config()["cache_max_bytes"]
    67108864
    >>> skfusion.set_config(cache_max_bytes=512 * 2**20)
    """
    if unset:
        raise TypeError(
            f"set_config got unknown keys {sorted(unset)!r}; known keys are {sorted(_DEFAULTS)!r}."
        )
    changes = {}
    if cache is not None:
        changes["cache"] = _check("cache", cache)
    if cache_dir is not None:
        changes["cache_dir"] = None if cache_dir == "" else _check("cache_dir", cache_dir)
    if cache_max_bytes is not None:
        changes["cache_max_bytes"] = _check("cache_max_bytes", cache_max_bytes)
    if cache_disk_max_bytes is not None:
        changes["cache_disk_max_bytes"] = _check("cache_disk_max_bytes", cache_disk_max_bytes)
    if show_progress is not None:
        changes["show_progress"] = _check("show_progress", show_progress)
    _get_threadlocal_config().update(changes)


@contextmanager
def config_context(*, cache=None, cache_dir=None, cache_max_bytes=None,
                   cache_disk_max_bytes=None, show_progress=None):
    """Change skfusion's configuration inside a ``with`` block, then restore it.

    As with :func:`sklearn.config_context`, the change holds in the calling thread only, and
    the thread's previous settings come back when the block ends, even if it raises. Other
    threads do not see it, except skfusion's own joblib workers, which receive the settings of
    the thread that dispatched them (see :func:`set_config`).

    Read more in the :ref:`User Guide <embedding_cache>`.

    Parameters
    ----------
{parameters}
    Yields
    ------
    None

    See Also
    --------
    set_config : A lasting change.

    Examples
    --------
    >>> import skfusion
    >>> with skfusion.config_context(cache=False):
    ...     skfusion.get_config()["cache"]
    False
    """
    explicit = _get_threadlocal_config()
    saved = dict(explicit)
    try:
        set_config(cache=cache, cache_dir=cache_dir, cache_max_bytes=cache_max_bytes,
                   cache_disk_max_bytes=cache_disk_max_bytes, show_progress=show_progress)
        yield
    finally:
        explicit.clear()
        explicit.update(saved)


set_config.__doc__ = set_config.__doc__.format(parameters=_PARAMETERS)
config_context.__doc__ = config_context.__doc__.format(parameters=_PARAMETERS)
