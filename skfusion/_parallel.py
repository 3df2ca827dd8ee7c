"""joblib's ``Parallel`` and ``delayed`` that carry skfusion's configuration into the workers.

skfusion's configuration is per thread (:mod:`skfusion._config`), and a joblib worker -- a
thread of a pool, a loky process, a dask task -- would otherwise start from the environment
variables and the defaults. As :mod:`sklearn.utils.parallel` does for scikit-learn's, this
:class:`Parallel` reads :func:`skfusion.get_config` in the thread that calls it, and each task
made with this :func:`delayed` runs inside ``skfusion.config_context`` of those settings, in
whichever thread or process runs it (the settings travel pickled with the task). Both are built
on scikit-learn's, so scikit-learn's configuration and warning filters travel too.

Use them together, in place of ``sklearn.utils.parallel``'s, for every parallel call in
skfusion.
"""

# SPDX-License-Identifier: BSD-3-Clause

import functools
import warnings

from sklearn.utils import parallel as _sk_parallel

from ._config import config_context, get_config

__all__ = ["Parallel", "delayed"]


class Parallel(_sk_parallel.Parallel):
    """:class:`sklearn.utils.parallel.Parallel` that also carries skfusion's configuration.

    The configuration of the thread that calls the instance (:func:`skfusion.get_config`) is
    read once, before the first task is dispatched, and applied around every task made with
    :func:`delayed`, in the worker that runs it. The API is :class:`joblib.Parallel`'s.

    Examples
    --------
    >>> import skfusion
    >>> from skfusion._parallel import Parallel, delayed
    >>> with skfusion.config_context(cache=False):
    ...     Parallel(n_jobs=2, prefer="threads")(
    ...         delayed(skfusion.get_config)() for _ in range(2)
    ...     )[0]["cache"]
    False
    """

    def __call__(self, iterable):
        """Dispatch the tasks and return their results.

        Parameters
        ----------
        iterable : iterable
            Tuples ``(delayed_function, args, kwargs)``, as :func:`delayed` makes them.

        Returns
        -------
        results : list
            The tasks' results, in order.
        """
        # Read here, in the calling thread: joblib may dispatch from another thread.
        config = get_config()
        return super().__call__(
            (_with_skfusion_config(function, config), args, kwargs)
            for function, args, kwargs in iterable
        )


def _with_skfusion_config(function, config):
    if hasattr(function, "with_skfusion_config"):
        return function.with_skfusion_config(config)
    warnings.warn(
        "skfusion._parallel.Parallel needs skfusion._parallel.delayed (not joblib's or "
        "scikit-learn's) to carry skfusion's configuration to the joblib workers.",
        UserWarning,
    )
    return function


def delayed(function):
    """Capture a function and its arguments for :class:`Parallel`.

    Parameters
    ----------
    function : callable
        The function to run in a worker.

    Returns
    -------
    delayed_function : callable
        Called with the arguments, it returns the ``(wrapper, args, kwargs)`` task that
        :class:`Parallel` runs; the wrapper applies skfusion's and scikit-learn's
        configurations of the dispatching thread around ``function``.
    """
    sklearn_delayed = _sk_parallel.delayed(function)

    @functools.wraps(function)
    def delayed_function(*args, **kwargs):
        sklearn_wrapper, args, kwargs = sklearn_delayed(*args, **kwargs)
        return _FuncWrapper(sklearn_wrapper), args, kwargs

    return delayed_function


class _FuncWrapper:
    """Apply the dispatching thread's skfusion configuration, then call scikit-learn's wrapper
    (which applies scikit-learn's configuration and warning filters, then the function)."""

    def __init__(self, function):
        # the name and docstring only (updated=()): the inner wrapper's __dict__ holds its own
        # ``function`` and ``config``
        functools.update_wrapper(self, function, updated=())
        self.function = function
        self.config = None

    def with_skfusion_config(self, config):
        self.config = config
        return self

    def with_config_and_warning_filters(self, config, warning_filters):
        # called by sklearn.utils.parallel.Parallel: scikit-learn's settings, for the inner
        # wrapper to apply
        self.function = self.function.with_config_and_warning_filters(config, warning_filters)
        return self

    def __call__(self, *args, **kwargs):
        if self.config is None:
            warnings.warn(
                "skfusion._parallel.delayed should be used with skfusion._parallel.Parallel, "
                "which carries skfusion's configuration to the joblib workers.",
                UserWarning,
            )
            return self.function(*args, **kwargs)
        with config_context(**_as_arguments(self.config)):
            return self.function(*args, **kwargs)


def _as_arguments(config):
    """``config_context`` arguments that set every key to ``config``'s value, ``cache_dir=None``
    included (``""``: no disk layer, whatever the worker's environment says)."""
    return {**config, "cache_dir": config["cache_dir"] or ""}
