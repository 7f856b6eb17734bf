"""Classes by name, extended by installed packages through an entry-point group, as lmms-eval keeps its
models and tasks. The methods and the benchmarks are each one `Registry`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from .errors import UserError

T = TypeVar("T", bound=type)


class Registry(Mapping, Generic[T]):
    """A read-only mapping name -> class. `register` adds a subclass of `base` under its `name` attribute
    (a class decorator); the entry-point group's plugins are imported the first time a name is missing or
    the names are listed."""

    def __init__(self, kind: str, base: type, group: str):
        self.kind, self.base, self.group = kind, base, group
        self._classes: dict[str, T] = {}
        self._plugins_loaded = False

    def register(self, cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, self.base)) or not getattr(cls, "name", ""):
            raise TypeError(f"register takes a {self.base.__name__} subclass with a name, got {cls!r}.")
        self._classes[cls.name] = cls
        return cls

    def load_plugins(self) -> None:
        """Import the classes that installed packages declare under the entry-point group (once)."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for point in entry_points(group=self.group):
            try:
                loaded = point.load()
            except Exception as err:  # a broken plugin is named, not a traceback from deep inside importlib
                raise UserError(f"The {self.kind} plugin '{point.name}' ({point.value}) failed to load: "
                                f"{type(err).__name__}: {err}") from err
            if isinstance(loaded, type) and issubclass(loaded, self.base) and loaded.name not in self._classes:
                self.register(loaded)

    def names(self) -> list[str]:
        """Every registered name, plugins included, in registration order."""
        self.load_plugins()
        return list(self._classes)

    def get(self, name: str) -> T:  # noqa: D102 (Mapping.get's default is not offered: unknown is an error)
        if name not in self._classes:
            self.load_plugins()
        if name not in self._classes:
            raise UserError(f"Unknown {self.kind} '{name}': choose one of {', '.join(self._classes)}.")
        return self._classes[name]

    def __getitem__(self, name: str) -> T:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)
