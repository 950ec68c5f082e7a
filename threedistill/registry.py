"""Name -> class registries: modules register under a name and are built from their typed config.

Third-party packages extend a registry without touching this code through an entry point in their
pyproject (nerfstudio's plugin habit), e.g. `[project.entry-points."threedistill.guidance"] my = "pkg:MyGuidance"`;
entry points are read the first time a name is not found.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of buildable classes, e.g. `GUIDANCE.register("sds")(SDSGuidance)`."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group or f"threedistill.{kind}"
        self._entries: dict[str, type[T]] = {}
        self._plugins_loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered to {self._entries[name].__name__}")
            self._entries[name] = cls
            return cls

        return decorator

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._entries:
                self._entries[ep.name] = ep.load()

    def get(self, name: str) -> type[T]:
        if name not in self._entries:
            self._load_plugins()
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}")
        return self._entries[name]

    def build(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self.names()
