"""``_compat/pip.py`` against the installed pip: the vendored copy of packaging a bare runtime
falls back to is where the function looks for it."""

import sys

from spark_tracking._compat.pip import packaging_module


def test_packaging_comes_from_pip_s_vendored_copy_when_packaging_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "packaging", None)  # as on a runtime without it: ImportError
    monkeypatch.delitem(sys.modules, "packaging.version", raising=False)
    version = packaging_module("version")
    assert version.__name__ == "pip._vendor.packaging.version"
    assert version.Version("2.9.2") < version.Version("3.0.1")
