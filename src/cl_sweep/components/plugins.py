"""Loading the modules that register a user's components (``plugins=[...]``) and installed plugins.

A plugin is any module that calls ``cl_sweep.register_*`` when it is imported:

- ``plugins=[my_components]``: a module name on the Python path (the working directory is on it
  for ``python -m cl_sweep``);
- ``plugins=[path/to/my_components.py]``: a file, imported under its file name;
- installed distributions that declare an entry point in the group ``cl_sweep.plugins``
  (``[project.entry-points."cl_sweep.plugins"] mine = "my_package.components"``) are loaded
  always, without being named.

The entry point imports them before Hydra composes the config (so ``activation=<a plugin's
activation>`` is an option), and every job imports its config's ``plugins`` again before it
trains, which is how workers of the parallel and cluster launchers get them. Loading is
idempotent. A plugin that fails to import stops the job before anything trains with one
paragraph naming it and the error.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from cl_sweep.config import ConfigError

ENTRY_POINT_GROUP = "cl_sweep.plugins"
_loaded: dict[str, str] = {}  # plugin as given (or entry point) -> module name
_entry_points_loaded = False


class PluginError(ConfigError):
    """A plugin could not be imported; the message is one paragraph."""


def _fail(what: str, exc: BaseException) -> None:
    detail = f"{type(exc).__name__}: {exc}".strip().splitlines()
    raise PluginError(
        f"cannot load the plugin {what}: {detail[0] if detail else type(exc).__name__}. A plugin is a module on "
        f"the Python path (plugins=[my_components]) or a path to a .py file (plugins=[path/to/my_components.py]) "
        f"that registers components with cl_sweep.register_activation, register_optimizer, ... when imported. "
        f"Fix it (or the plugins list) and run again: nothing was trained."
    ) from None


def _import_file(path: Path) -> str:
    name = path.stem
    if not name.isidentifier():
        raise ImportError(f"the file name {path.name!r} is not a Python module name")
    existing = sys.modules.get(name)
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() == path:
        return name
    if existing is not None:
        raise ImportError(f"a module named {name!r} is already imported from {getattr(existing, '__file__', '?')}")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # under its own name, so pickled functions of its jobs find it again
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return name


def load_entry_points() -> None:
    """Imports every installed ``cl_sweep.plugins`` entry point, once per process."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry point {ep.name} = {ep.value}"
        if key in _loaded:
            continue
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001 - any failure: one paragraph
            _fail(f"{ep.value!r} (installed entry point {ep.name!r} of {ENTRY_POINT_GROUP!r})", e)
        _loaded[key] = ep.value


def load_plugins(plugins: Iterable[str] | None = ()) -> list[str]:
    """Imports installed entry points, then each plugin given (module name or .py path); returns the module names."""
    load_entry_points()
    names = []
    for plugin in plugins or ():
        plugin = str(plugin).strip()
        if plugin in _loaded:
            names.append(_loaded[plugin])
            continue
        try:
            if plugin.endswith(".py") or "/" in plugin:
                path = Path(plugin).expanduser().resolve()
                if not path.is_file():
                    raise FileNotFoundError(f"no file {path}")
                name = _import_file(path)
            else:
                name = importlib.import_module(plugin).__name__
        except Exception as e:  # noqa: BLE001
            _fail(repr(plugin), e)
        _loaded[plugin] = name
        names.append(name)
    return names


def plugins_from_argv(argv: Sequence[str]) -> list[str]:
    """The ``plugins=[...]`` of a command line (also ``+plugins=``/``++plugins=``), parsed as Hydra parses it.

    The entry point needs them before Hydra composes: a plugin's components are config options.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    wanted = [a for a in argv if a.lstrip("+").split("=", 1)[0] == "plugins" and "=" in a]
    if not wanted:
        return []
    out: list[str] = []
    for override in OverridesParser.create().parse_overrides(wanted):
        if override.is_sweep_override():
            raise PluginError(f"{override.input_line} is not allowed; plugins cannot be swept "
                              f"(give one list, e.g. plugins=[my_components]). Nothing was trained.")
        value = override.value()
        out.extend(str(v) for v in (value if isinstance(value, list) else [value]))
    return out
