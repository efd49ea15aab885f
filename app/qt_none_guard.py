"""A guard against a PySide6 defect that aborts the app on Python 3.10 and 3.11.

PySide6 6.12.0 (its abi3 wheels) hands ``None`` back from every void call (``setText``,
``setGeometry``, ``setHidden``…) without taking a reference to it, and on some paths does the
same with ``True`` and ``False``. On Python 3.12 and later that is harmless: these objects
are immortal there (PEP 683). On 3.10 and 3.11 every such call lowers the object's reference
count by one, and after a few thousand calls (typing about a hundred tags, or a long
status-line run) CPython aborts the process with "Fatal Python error: none_dealloc" (or
"bool_dealloc"). Measured here: 1,000 ``QLabel.setText`` calls abort 3.10 and 3.11 and leave
3.12 and 3.13 unchanged (tests/app/test_app_inputs.py re-measures it).

``keep_none_alive`` does once what 3.12 does by design: it raises the reference count of
``None``, ``True``, ``False``, ``NotImplemented`` and ``Ellipsis`` by 2**40, so no realistic
number of dropped references reaches zero. These singletons are never freed in a healthy
process, so the extra count costs nothing. Nothing else is touched.
"""

from __future__ import annotations

import ctypes
import platform
import sys

MARGIN = 1 << 40
SINGLETONS = (None, True, False, NotImplemented, Ellipsis)


def needed() -> bool:
    """True on a release CPython without immortal objects (3.11 and older)."""
    return (platform.python_implementation() == "CPython" and sys.version_info < (3, 12)
            and not hasattr(sys, "gettotalrefcount"))  # a debug build lays objects out differently


def keep_none_alive() -> bool:
    """Raise each of SINGLETONS' reference count by MARGIN (once); True when it did."""
    if not needed():
        return False
    raised = False
    for obj in SINGLETONS:
        if sys.getrefcount(obj) < MARGIN:
            ctypes.c_ssize_t.from_address(id(obj)).value += MARGIN  # ob_refcnt: PyObject's first field
            raised = True
    return raised
