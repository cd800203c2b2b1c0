"""pip's private names, in one place, with the versions they were checked on."""

from __future__ import annotations

import importlib


def packaging_module(module: str):
    """``packaging.<module>`` (``version``, ``requirements``...): the installed ``packaging``, else
    the copy pip vendors, which a bare runtime always has (``pip._vendor.packaging``; checked on
    pip 26.3, the one CI installs; pip keeps its vendored libraries there, pip/_vendor/vendor.txt)."""
    try:
        return importlib.import_module(f"packaging.{module}")
    except ImportError:
        return importlib.import_module(f"pip._vendor.packaging.{module}")
