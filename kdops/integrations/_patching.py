"""One-line patching of an installed library: every binding of an original function or class,
in every imported module of the library, rebound to kdops' replacement, and back.

A library reaches its scorers and losses under many names: the defining module, package
re-exports, and ``from x import y`` bindings in the modules that use them (a loss module's
default ``similarity_fct``, an evaluator's default scorer). Rebinding only the defining module
misses those, so the patch rebinds every module attribute that *is* an original, wherever it
lives (late-interaction-kernels' ``patch_pylate`` lists the modules by hand instead, and misses
any it did not list). Modules imported after the patch bind the replacements, since they import
them from modules already patched.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class Patcher:
    """Swaps ``originals() -> {original: replacement}`` in the modules of ``package``.

    ``patch()`` is idempotent (a second call rebinds only what was imported since, and returns
    every binding swapped so far); ``unpatch()`` restores exactly what ``patch()`` swapped."""

    def __init__(self, package: str, originals: Callable[[], dict[object, object]]) -> None:
        self.package = package
        self.originals = originals
        self._swapped: dict[tuple[str, str], object] = {}  # (module, attribute) -> original

    def _modules(self):
        for name, module in list(sys.modules.items()):
            if module is not None and (name == self.package or name.startswith(self.package + ".")):
                yield name, module

    def rebind(self, namespace: dict, module_name: str | None = None) -> list[str]:
        """Rebind the originals bound in ``namespace`` (the globals of module ``module_name``,
        or a doctest's) to their replacements, in place; returns the names rebound. Not undone
        by :meth:`unpatch`: for namespaces outside the library, such as its test modules.

        A class stays bound in the module that defines it: its methods may name it there, as in
        ``super(Distillation, self).__init__()``, which with the name rebound to a subclass would
        call the class's own ``__init__`` again. Everywhere else (package re-exports, importers)
        it is rebound."""
        by_id = {id(original): (original, replacement) for original, replacement in self.originals().items()}
        rebound = []
        for name, value in list(namespace.items()):
            found = by_id.get(id(value))
            if found is not None and found[0] is value:
                if isinstance(value, type) and value.__module__ == module_name:
                    continue
                namespace[name] = found[1]
                rebound.append(name)
        return rebound

    def patch(self) -> list[str]:
        """Rebind every original to its replacement; returns the ``module.attribute`` names swapped."""
        for module_name, module in self._modules():
            originals = dict(vars(module))
            for attribute in self.rebind(vars(module), module_name):
                self._swapped[(module_name, attribute)] = originals[attribute]
        return self.swapped()

    def unpatch(self) -> list[str]:
        """Restore every binding ``patch()`` swapped; returns their names (empty when not patched)."""
        restored = self.swapped()
        for (module_name, attribute), original in self._swapped.items():
            setattr(sys.modules[module_name], attribute, original)
        self._swapped.clear()
        return restored

    def swapped(self) -> list[str]:
        """The ``module.attribute`` names currently bound to kdops' replacements."""
        return sorted(f"{module}.{attribute}" for module, attribute in self._swapped)
