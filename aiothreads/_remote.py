"""Executors whose work leaves this process: which ones they are, and what they are handed.

Semantics:

* An executor runs work in this process if it is a
  ``concurrent.futures.ThreadPoolExecutor`` (subclasses included: aiothreads'
  own pool, asyncio's default one, aiomisc's pool), or if its class, or a
  class it derives from, was declared with
  [`runs_in_threads`][aiothreads.runs_in_threads]. Such an executor is
  handed aiothreads' own call object and runs it in one of its threads.
* Every other executor counts as remote: process pools (the stdlib's,
  loky's), ``dask.distributed``'s ``Client.get_executor()``, mpi4py's
  ``MPIPoolExecutor``, and the stdlib's ``InterpreterPoolExecutor`` (a thread
  pool whose work runs in other interpreters). A remote executor receives
  the user's function and arguments and nothing of aiothreads' own:
  ``submit(func, *args)``, keyword arguments bound with
  ``functools.partial``, as ``loop.run_in_executor`` would hand them over.
* Before a call is submitted, its function and arguments are pickled into
  nowhere (large buffers are skipped): with ``pickle``, then, where that
  fails and the executor is not the stdlib's process pool, with
  ``cloudpickle`` if it is loaded (dask and loky pickle with it). If neither
  can, the call fails at once with ``ExecutorRefused`` naming the function,
  nothing is submitted, and its ``limit=`` place is given back. A function
  that ``pickle`` took by name before, called with arguments that always
  pickle (numbers, strings, bytes, ``None``), is not tried again.
* When the call is traced, its span opens as it is submitted, and the trace
  context (W3C ``traceparent``, ``tracestate`` and ``baggage``) travels with
  it: the executor then receives ``Carried``, a callable holding the function
  and those headers, which it calls with the arguments as it would the
  function. ``Carried`` pickles as a call of standard-library functions only,
  which the worker makes as it unpickles it: they look for aiothreads there
  and return ``call_carried`` bound to the headers and the function where it
  is importable, or the bare function where it is not. So a worker without
  aiothreads just runs the function, and nothing fails. ``call_carried``
  makes the carried context current while the function runs, with a span of
  its own where the worker has an OpenTelemetry SDK (see
  ``aiothreads.instrumentation._carried``). Either way the function gets
  exactly the arguments it was called with; the price is a few microseconds
  in the worker, per call, and three frames of aiothreads' own in a remote
  traceback.
* A call that records no span of its own (the calls of a request its trace
  left out, under the SDK's parent-based sampler) carries the running
  context's headers. On the stdlib's process pool, the calls of one such
  request to one function ``pickle`` takes by name hand over one
  ``Carried``, pickled once (see ``carried_call``).
* An untraced call (no instrumentation, ``instrument=False``, no tracing
  backend, or nothing to carry) hands the executor the function itself.
* The executor's future settles the call: its result, or its exception as
  the engine delivers it (the stdlib's and loky's pools chain the worker's
  traceback as ``__cause__``; dask raises it with the worker's frames). Work
  the executor cancels or drops (a shutdown, a cluster that closed) cancels
  the call.
* Until that future is done the call keeps its ``limit=`` place, counts as
  in flight and shows in ``snapshot()`` under the executor's name. It counts
  as started once the executor took it: no engine's future tells when a
  worker starts it (dask's never enters ``RUNNING``; the stdlib's and loky's
  do when they hand it to a worker's queue, which nobody is told of), so its
  wait for a worker is part of its duration here, and shows in the trace as
  the gap before the worker's span.
* Cancelling the caller cancels the executor's future, best effort: work
  still queued there never runs, and counts as cancelled at once; work a
  worker runs goes on, and the call counts as cancelled (its outcome
  dropped) once that outcome arrives, holding its place until then. dask
  cancels a running task at once, so the place comes back at once, while the
  worker's thread finishes the function on its own.
* Generators cannot run on a remote executor: their items are handed over in
  this process (``check_thread_executor`` refuses one at decoration).
"""

from __future__ import annotations

import builtins
import functools
import importlib.util
import pickle
import sys
import types
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

from ._errors import ExecutorRefused
from ._names import qualified_name

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "Carried",
    "call_carried",
    "carried_call",
    "check_picklable",
    "is_stdlib_process_pool",
    "runs_elsewhere",
    "runs_in_threads",
    "unpickle_carried",
]

E = TypeVar("E", bound=type[Executor])
T = TypeVar("T")

_declared: set[type[Executor]] = set()
_verdicts: dict[type[Executor], bool] = {}
"""Whether executors of a class run work elsewhere, decided on first use."""


def runs_in_threads(executor_type: E) -> E:
    """Declare that executors of ``executor_type`` (and its subclasses) run work in this process.

    aiothreads hands such an executor its own call object, which must stay in
    this process, and runs generators on it. ``ThreadPoolExecutor`` and its
    subclasses need no declaration; declare a thread executor that does not
    derive from it. Any other executor is taken to run work elsewhere (in
    other processes or on other machines) and receives only the function and
    its arguments. Returns ``executor_type``, so it also works as a class
    decorator.

    ```python
    import asyncio
    from concurrent.futures import Executor, Future

    import aiothreads


    @aiothreads.runs_in_threads
    class InlineExecutor(Executor):
        def submit(self, fn, /, *args, **kwargs):
            future = Future()
            future.set_result(fn(*args, **kwargs))
            return future


    @aiothreads.threaded(executor=InlineExecutor())
    def add(a: int, b: int) -> int:
        return a + b


    assert asyncio.run(add(2, 3)) == 5
    ```

    Args:
        executor_type: A ``concurrent.futures.Executor`` subclass whose work
            runs in threads of this process.

    Raises:
        TypeError: ``executor_type`` is not an ``Executor`` subclass.
    """
    if not (isinstance(executor_type, type) and issubclass(executor_type, Executor)):
        raise TypeError(
            f"runs_in_threads takes a concurrent.futures.Executor subclass, got {executor_type!r}"
        )
    _declared.add(executor_type)
    _verdicts.clear()  # decided before the declaration: decide again
    return executor_type


def runs_elsewhere(executor: Executor) -> bool:
    """Whether ``executor`` runs work outside this process (see the module's semantics)."""
    kind = type(executor)
    verdict = _verdicts.get(kind)
    if verdict is None:
        verdict = _verdicts[kind] = not _in_this_process(kind)
    return verdict


def _in_this_process(kind: type[Executor]) -> bool:
    if _declared and issubclass(kind, tuple(_declared)):
        return True
    interpreters = sys.modules.get("concurrent.futures.interpreter")
    if interpreters is not None and issubclass(kind, interpreters.InterpreterPoolExecutor):
        return False
    return issubclass(kind, ThreadPoolExecutor)


def is_stdlib_process_pool(executor: Executor) -> bool:
    """Whether ``executor`` is a ``concurrent.futures.ProcessPoolExecutor``."""
    # Looked up only once something imported it: importing it costs multiprocessing.
    process = sys.modules.get("concurrent.futures.process")
    return process is not None and isinstance(executor, process.ProcessPoolExecutor)


_SELF_CONTAINED: Final = frozenset({bool, bytes, complex, float, int, str, type(None)})
"""Types whose values always pickle: arguments of only these types need no trial."""
_PICKLED_BY_NAME: Final = (types.FunctionType, types.BuiltinFunctionType)
"""Functions that ``pickle`` takes by their module and name: once it did, it always will."""
_MAX_REMEMBERED: Final = 256
_pickled_functions: dict[int, Callable[..., Any]] = {}
"""Functions ``pickle`` took, by id (each kept alive, so that its id stays its own)."""


def check_picklable(
    executor: Executor, func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> None:
    """Raise ``ExecutorRefused`` unless ``func`` and its arguments pickle for ``executor``.

    Tried with ``pickle``, then with ``cloudpickle`` if it is loaded and the
    executor is not the stdlib's process pool (whose workers use ``pickle``).
    A function ``pickle`` took before, called with arguments of types that
    always pickle (numbers, strings, bytes, ``None``), is not tried again.
    """
    if (
        _pickled_functions.get(id(func)) is func
        and all(type(arg) in _SELF_CONTAINED for arg in args)
        and all(type(arg) in _SELF_CONTAINED for arg in kwargs.values())
    ):
        return
    work = (func, args, dict(kwargs))
    try:
        _pickle_into_nowhere(pickle.Pickler, work)
        if isinstance(func, _PICKLED_BY_NAME):
            if len(_pickled_functions) >= _MAX_REMEMBERED:
                _pickled_functions.clear()
            _pickled_functions[id(func)] = func
    except Exception as exc:
        cloudpickle = None if is_stdlib_process_pool(executor) else sys.modules.get("cloudpickle")
        if cloudpickle is None:
            raise _refusal(executor, func, exc) from exc
        try:
            _pickle_into_nowhere(cloudpickle.Pickler, work)
        except Exception as second:
            raise _refusal(executor, func, second) from second


def _refusal(executor: Executor, func: Callable[..., Any], exc: Exception) -> ExecutorRefused:
    name = type(executor).__name__
    hint = ""
    if not is_stdlib_process_pool(executor):
        hint = (
            f"; if {name} runs work in this process's threads, "
            f"declare it with aiothreads.runs_in_threads({name})"
        )
    return ExecutorRefused(
        f"{qualified_name(func)} cannot run on {name}: the function or its arguments do "
        f"not pickle ({exc}); use a thread executor, or a module-level function with "
        f"picklable arguments{hint}"
    )


class _Nowhere:
    """A file that forgets what is written to it."""

    __slots__ = ()

    @staticmethod
    def write(data: Any) -> int:
        return len(data)


def _out_of_band(_buffer: object) -> None:
    """Keep a large buffer (protocol 5) out of the pickle: its bytes need no copy to check."""


def _pickle_into_nowhere(pickler: Callable[..., Any], work: object) -> None:
    pickler(_Nowhere(), protocol=5, buffer_callback=_out_of_band).dump(work)


class _Unpickled:
    """A call made while unpickling: pickles as ``func(*args)``.

    The nodes of the small program that finds, in a worker, what a carried
    call runs as (``_REBUILD``); it names nothing but the standard library.
    """

    __slots__ = ("args", "func")

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


_ABSENT: Final = "aiothreads_carried"
"""An attribute no tuple has: ``getattr(carried, _ABSENT, call)`` is ``call``."""
_found_package = _Unpickled(
    builtins.__import__,
    _Unpickled(getattr, _Unpickled(importlib.util.find_spec, "aiothreads"), "name", "builtins"),
)  # the aiothreads package where it is importable, else ``builtins``
_REBUILD: Final = _Unpickled(
    getattr,
    _Unpickled(getattr, _found_package, "_remote", None),  # this module, found by its package
    "unpickle_carried",
    getattr,  # without aiothreads: getattr(carried, _ABSENT, call) -> call
)
_PROGRAM: Final = pickle.dumps(_REBUILD, protocol=4)
"""``_REBUILD``, pickled once: a call pickles these bytes instead of the program's nodes."""


class _Rebuild:
    """Stands for ``_REBUILD`` where a pickle wants a callable: unpickles as its program's result.

    Pickled ``inline``, it is the program's nodes, which a worker runs as it
    reads them; else it is ``_PROGRAM``'s bytes, which the worker unpickles
    once more. The nodes cost more to pickle and less to unpickle: they suit
    what is pickled once and unpickled many times (``Carried.pickle_ahead``).
    Calling it here does what a worker does: runs the program, then its result.
    """

    __slots__ = ("_inline",)

    def __init__(self, *, inline: bool) -> None:
        self._inline = inline

    def __reduce__(self) -> tuple[Any, ...]:
        if self._inline:
            return _REBUILD.__reduce__()
        return (pickle.loads, (_PROGRAM,))

    def __call__(self, carried: Trace, absent: str, call: Callable[..., T]) -> Callable[..., T]:
        rebuild: Callable[[Trace, str, Callable[..., T]], Callable[..., T]]
        rebuild = pickle.loads(_PROGRAM)
        return rebuild(carried, absent, call)


_REBUILD_PICKLED: Final = _Rebuild(inline=False)
_REBUILD_INLINE: Final = _Rebuild(inline=True)


class Carried:
    """A call's function with its trace headers, as a remote executor receives it.

    It pickles as ``rebuild(carried, _ABSENT, call)``, where ``call`` is the
    function with its keyword arguments bound, ``carried`` is ``(kind,
    function name, headers)``, and ``rebuild`` is what the worker finds as it
    unpickles it (see the module's semantics): ``unpickle_carried`` where
    aiothreads is importable, ``getattr`` (which leaves just ``call``, the
    default for an attribute no tuple has) where it is not. It is named
    after the function, so that an engine that names tasks after what it
    runs (dask) shows the user's name.
    """

    __slots__ = ("__name__", "__qualname__", "__wrapped__", "_carried", "_pickled")

    def __init__(
        self, func: Callable[..., Any], kind: str, function: str, headers: Mapping[str, str]
    ) -> None:
        self.__wrapped__ = func
        self._carried = (kind, function, dict(headers))
        self._pickled: bytes | None = None
        """What it pickles as, made ahead (see ``carried_call``), or ``None``."""
        inner = func
        while isinstance(inner, functools.partial):
            inner = inner.func
        self.__name__ = getattr(inner, "__name__", function)
        self.__qualname__ = getattr(inner, "__qualname__", function)

    def __call__(self, *args: Any) -> Any:
        """Run the function as a worker would: in the carried trace context."""
        return call_carried(self._carried, self.__wrapped__, *args)

    def pickle_ahead(self) -> None:
        """Pickle it now, once: from then on it pickles as a copy of those bytes."""
        self._pickled = pickle.dumps(
            _Unpickled(_REBUILD_INLINE, self._carried, _ABSENT, self.__wrapped__),
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        pickled = self._pickled
        if pickled is not None:
            return (pickle.loads, (pickled,))
        return (_REBUILD_PICKLED, (self._carried, _ABSENT, self.__wrapped__))

    def __dask_tokenize__(self) -> object:
        """Return what dask hashes for a pure task's key: the function, not the trace headers."""
        return ("aiothreads.Carried", self.__wrapped__)


_last_carried: tuple[object, object, object, str, str, Carried | None] = (
    None,
    None,
    None,
    "",
    "",
    None,
)
"""``(executor class, function, headers, kind, name, Carried)`` of the last call that
``carried_call`` found worth keeping; the ``Carried`` is kept once it came twice."""


def carried_call(
    executor: Executor,
    func: Callable[..., Any],
    kind: str,
    function: str,
    headers: Mapping[str, str],
) -> Carried:
    """Return ``Carried(func, kind, function, headers)`` for ``executor``.

    For the stdlib's process pool, which pickles with ``pickle``, calls of a
    function ``pickle`` takes by name that carry the very same ``headers``
    mapping (those of a request whose trace records no span for them) are
    alike. The second such call in a row makes a ``Carried`` that is
    pickled here, once, and kept: the calls after it hand that one over,
    and the executor's pickler copies its bytes instead of pickling it again.
    """
    global _last_carried  # noqa: PLW0603 - one entry, replaced whole
    pool, last_func, last_headers, last_kind, last_function, kept = _last_carried
    if (
        last_func is func
        and last_headers is headers
        and pool is type(executor)
        and last_kind == kind
        and last_function == function
    ):
        if kept is None:
            kept = Carried(func, kind, function, headers)
            kept.pickle_ahead()
            _last_carried = (pool, func, headers, kind, function, kept)
        return kept
    if _pickled_functions.get(id(func)) is func and is_stdlib_process_pool(executor):
        _last_carried = (type(executor), func, headers, kind, function, None)
    return Carried(func, kind, function, headers)


Trace: TypeAlias = "tuple[str, str, Mapping[str, str]]"
"""What a call carries to its worker: ``(kind, function name, W3C headers)``."""


def unpickle_carried(carried: Trace, _absent: str, call: Callable[..., T]) -> Callable[..., T]:
    """In a worker: return what a carried call runs as (``Carried`` unpickles through it).

    Called as ``getattr`` is where aiothreads is not importable, so that either
    gives something to call. The name workers look up: it stays, whatever
    else moves.
    """
    return functools.partial(call_carried, carried, call)


def call_carried(carried: Trace, call: Callable[..., T], /, *args: Any) -> T:
    """In a worker: run ``call(*args)`` in the trace context ``carried`` from the caller."""
    return _carried_runner()(carried, call, args)


@functools.cache
def _carried_runner() -> Callable[[Trace, Callable[..., T], tuple[Any, ...]], T]:
    """``run_in_carried_context``, imported where a carried call first runs: in a worker."""
    from .instrumentation._carried import run_in_carried_context  # noqa: PLC0415 - worker only

    return run_in_carried_context
