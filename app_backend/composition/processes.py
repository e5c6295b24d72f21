"""Child processes that never outlive the process that started them."""

from __future__ import annotations

import contextlib
import signal


def die_with_parent() -> None:
    """A `preexec_fn`: on Linux the child gets SIGTERM when its parent dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
