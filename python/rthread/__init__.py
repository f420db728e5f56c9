"""rthread: CPython's low-level threading module ``_thread``, in Rust.

``import rthread as _thread`` gives the same API as the built-in ``_thread`` of
the running interpreter (same results, exceptions, messages and reprs), on
faster primitives implemented in Rust.
"""

from . import _rthread

# Re-export every name of the native module (public and underscore ones alike:
# ``threading`` needs the private ones), so the package is the drop-in.
globals().update(
    {name: getattr(_rthread, name) for name in dir(_rthread) if not name.startswith("__")}
)

__all__ = sorted(name for name in dir(_rthread) if not name.startswith("_"))
