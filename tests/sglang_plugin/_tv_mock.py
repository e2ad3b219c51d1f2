"""Test-only permissive ``torchvision`` mock (SGLANG-0.5.17.md §6).

``import sglang`` needs torchvision, but PyPI torchvision does not load against torch
2.13.0+cpu. This meta-path finder serves any ``torchvision.*`` module as a permissive stub (any
attribute is a callable stub class). ``__version__`` / ``__file__`` are set because transformers
parses the version. Installed only when a real torchvision cannot be imported.
"""

import importlib.abc
import importlib.machinery
import sys
import types


class _Anything(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _stub(name)

    def __call__(cls, *args, **kwargs):
        return _stub("instance")

    def __mro_entries__(cls, bases):
        return (object,)


def _stub(name):
    return _Anything(str(name), (), {})


class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _stub(name)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        mod = _Module(spec.name)
        mod.__path__ = []
        mod.__file__ = f"<mock {spec.name}>"
        mod.__version__ = "0.28.0"
        return mod

    def exec_module(self, module):
        pass


def install() -> None:
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    try:
        import torchvision  # noqa: F401
        return
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    sys.meta_path.insert(0, _Finder())
