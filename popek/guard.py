"""Calling plug-in code without trusting it.

A VMM written by someone else may raise, loop forever, or return the wrong
type.  Every call popek makes into a plug-in goes through `call`, which turns
each of those into a `PluginFailure` naming the plug-in and the method, with
a bound on the processor time it may take (and a longer one on the clock).
The bounds use signals, so they apply in the main thread of a process
(where popek and pytest-xdist workers run plug-ins); elsewhere the call
runs unbounded.
"""

from __future__ import annotations

import signal
import threading
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from popek.vmm import GuestRefused

DEFAULT_TIMEOUT = 60.0  # seconds for one call into a plug-in

# Set in a plug-in's own process (`popek.isolation`): there, anything the
# plug-in raises is its failure, KeyboardInterrupt and SystemExit included
# (no user can press Ctrl-C at that process; popek itself would end), and
# the parent is told before each call which method runs and for how long,
# so that its watchdog can name a call that never comes back.
contain_all = False
on_call: Callable[[str, float | None], None] | None = None


class PluginFailure(Exception):
    """A plug-in misbehaved; the message says which, where and how."""

    def __init__(self, plugin: str, method: str, problem: str, detail: str = ""):
        super().__init__(f"VMM {plugin!r}: {method}() {problem}")
        self.plugin, self.method, self.problem, self.detail = plugin, method, problem, detail


class _Timeout(BaseException):
    """Raised inside the plug-in by the alarm; BaseException so that a
    plug-in's own `except Exception` cannot swallow it."""


# A plug-in that blocks (sleeps, waits on a lock) uses no processor time, so
# the processor-time limit cannot see it: a wall-clock limit this many times
# longer stands behind it.
WALL_FACTOR = 5


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Bound the call by the *processor time* it uses (ITIMER_PROF), not by
    the clock: a loop costs the same processor time on a quiet and on a
    loaded machine, so a limit that a slow machine or a busy neighbour
    would trip by the clock does not trip here.  A wall-clock limit of
    WALL_FACTOR times as long catches a plug-in that blocks."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise _Timeout(signum)

    previous = signal.signal(signal.SIGPROF, on_alarm), signal.signal(signal.SIGALRM, on_alarm)
    # repeat the alarms: a plug-in with a bare `except:` swallows the first one
    signal.setitimer(signal.ITIMER_PROF, seconds, 0.25)
    signal.setitimer(signal.ITIMER_REAL, seconds * WALL_FACTOR, 0.25)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGPROF, previous[0])
        signal.signal(signal.SIGALRM, previous[1])


def call(
    plugin: str,
    method: str,
    fn: Callable[..., Any],
    *args: Any,
    timeout: float | None = DEFAULT_TIMEOUT,
    returns: type | tuple[type, ...] | None = None,
    **kwargs: Any,
) -> Any:
    """``fn(*args, **kwargs)``, with plug-in failures made into `PluginFailure`."""
    if on_call is not None:
        on_call(method, timeout)
    try:
        with _time_limit(timeout):
            result = fn(*args, **kwargs)
    except _Timeout as e:
        if e.args and e.args[0] == signal.SIGALRM:  # it blocked, or ignored the processor-time alarm
            raise PluginFailure(plugin, method, f"did not return within {timeout:g} s of processor time, "
                                f"nor within {timeout * WALL_FACTOR:g} s on the clock") from None  # fmt: skip
        raise PluginFailure(plugin, method, f"did not return within {timeout:g} s of processor time") from None
    except GuestRefused:
        raise  # a refusal is the plug-in's declared answer, not a failure
    except KeyboardInterrupt as e:
        if not contain_all:
            raise  # the user's Ctrl-C, in popek's own process
        raise _failure(plugin, method, e) from None
    except SystemExit as e:
        if not contain_all:
            raise PluginFailure(plugin, method, f"tried to end popek (SystemExit: {text_of(e)})") from None
        raise _failure(plugin, method, e) from None
    except Exception as e:  # anything a plug-in raises is the plug-in's failure
        raise _failure(plugin, method, e) from None
    if returns is not None and not isinstance(result, returns):
        want = returns.__name__ if isinstance(returns, type) else " or ".join(t.__name__ for t in returns)
        raise PluginFailure(plugin, method, f"returned {type(result).__name__}, expected {want}")
    return result


def text_of(e: BaseException) -> str:
    """``str(e)``, or a note saying it could not be had: a plug-in's
    exception may define a ``__str__`` that raises too."""
    try:
        return str(e)
    except BaseException as inner:  # noqa: BLE001 - its __str__ is plug-in code as well
        return f"<str() of it raised {type(inner).__name__}>"


def _failure(plugin: str, method: str, e: BaseException) -> PluginFailure:
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
    try:
        detail = "".join(traceback.format_exception(e))
    except BaseException:  # noqa: BLE001 - formatting calls the plug-in's __str__
        detail = "".join(traceback.format_list(tb))
    return PluginFailure(plugin, method, f"raised {type(e).__name__}: {text_of(e)}{where}", detail)
