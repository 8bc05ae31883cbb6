"""Composes a sweep's job configs fast: the same configs as Hydra's ``load_sweep_config``.

Hydra composes every job from scratch (search path, defaults tree, every YAML file read and
merged again): about 0.1 s per job on a 2-core CPU, minutes for the 1,943 jobs of the whole A.6
grid, which on a GPU is longer than the training. The jobs of a grid differ only in *leaf* value
overrides (``activation.alpha=3.0``); the config before those overrides depends only on the
config-group overrides (``activation=hard_ash``). So it is composed by Hydra once per distinct
list of group overrides, kept, and each job is a copy of it with its leaf overrides applied and
its ``hydra`` node finished exactly as ``ConfigLoaderImpl._load_configuration_impl`` does
(Hydra 1.3; ``tests/test_sweeps.py`` checks the two configs are identical, ``hydra`` node included).

Anything unusual (a loader that is not Hydra's own, a sweep override, an override key not seen
before) takes Hydra's own path, which also teaches the cache which keys are leaf overrides.

Even a copied ``DictConfig`` costs milliseconds, and Hydra's ``run_job`` copies each job's config
four more times: a sweep of thousands of jobs would spend a minute before training. `plain_job`
therefore gives what a population launcher takes from a job (its resolved config without the
``hydra`` node, its task overrides and its folder) from plain containers: the group's resolved
config with each leaf value set as OmegaConf converted it (learned once per value), and the folder
from ``hydra.sweep.dir`` and ``hydra.sweep.subdir`` where they interpolate only what is known
without a job config (the group's choices, ``override_dirname``, the job number). Where any of
that does not hold it returns None and the job takes the `compose` path.
"""

from __future__ import annotations

import copy
import json
import os
import re
from typing import Any, NamedTuple, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict


class PlainJob(NamedTuple):
    """A job as the population launchers need it: ``OmegaConf.to_container(cfg, resolve=True)`` of
    its config without ``hydra``, ``hydra.overrides.task`` and ``hydra.runtime.output_dir``."""

    cfg: dict
    overrides: list[str]
    output_dir: str


_ABSENT = object()
_INTERPOLATION = re.compile(r"\$\{([^${}\\]*)\}")
#: The sweep presets' folder name, cut to what file systems take (`cl_sweep.config.fit_dirname`).
_FIT_DIRNAME = "${cl_sweep.fit_dirname:${hydra.job.override_dirname}}"
_FITTED = ("job.override_dirname:fit",)


def _plain_copy(value: Any) -> Any:
    """A deep copy of plain containers (several times faster than ``copy.deepcopy``)."""
    if isinstance(value, dict):
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_copy(v) for v in value]
    return value


class _Folder:
    """A group's job folder (``hydra.sweep.dir``/``hydra.sweep.subdir``) as a function of the per-job
    values; ``ok`` is False where they interpolate anything else (then each job's config says)."""

    def __init__(self, probe: DictConfig) -> None:
        self.ok = False
        sweep = probe.hydra.sweep
        raw_dir, raw_sub = sweep._get_node("dir")._value(), sweep._get_node("subdir")._value()
        if isinstance(raw_sub, str):  # the one nested interpolation this fast path knows
            raw_sub = raw_sub.replace(_FIT_DIRNAME, "${hydra." + _FITTED[0] + "}")
        # callbacks hear each job start: Hydra's own path; cl_sweep's sweep line (`cl_sweep.progress.JobEnd`)
        # needs no job context here, since this launcher reports its jobs to the line itself
        if any(cb.get("_target_") != "cl_sweep.progress.JobEnd" for cb in (probe.hydra.callbacks or {}).values()):
            return
        dir_parts = self._parts(raw_dir)
        if dir_parts is None or any(isinstance(p, tuple) and not p[0].startswith("now:") for p in dir_parts):
            return
        self.sweep_dir = str(OmegaConf.select(probe, "hydra.sweep.dir"))  # `now` from the master's resolver cache
        # literal text, or the interpolation's path: ("job.override_dirname",) / ("job.num",) / ("job.id",)
        self.parts: list[str | tuple[str]] = []
        for part in self._parts(raw_sub) or [None]:
            if isinstance(part, tuple):
                path = part[0]
                for prefix in ("hydra:", "hydra."):
                    path = path[len(prefix) :] if path.startswith(prefix) else path
                if not part[0].startswith(("hydra:", "hydra.")):
                    return
                if path in ("job.override_dirname", _FITTED[0], "job.num", "job.id"):
                    part = (path,)
                elif path.startswith("runtime.choices.") and isinstance(OmegaConf.select(probe.hydra, path, default=None), str):
                    part = OmegaConf.select(probe.hydra, path)  # the same for every job of the group
                else:
                    return
            elif part is None:
                return
            self.parts.append(part)
        dirname = probe.hydra.job.config.override_dirname
        self.kv_sep, self.item_sep, self.exclude_keys = dirname.kv_sep, dirname.item_sep, list(dirname.exclude_keys)
        self.ok = True

    @staticmethod
    def _parts(raw: Any) -> list[str | tuple[str]] | None:
        """``raw`` as literal texts and (path,) interpolations; None for nested or escaped ones."""
        if not isinstance(raw, str):
            return [str(raw)]
        if "\\" in raw or "${" in _INTERPOLATION.sub("", raw):
            return None
        parts: list[str | tuple[str]] = []
        pos = 0
        for m in _INTERPOLATION.finditer(raw):
            parts += [raw[pos : m.start()], (m.group(1).strip(),)]
            pos = m.end()
        return parts + [raw[pos:]]

    def output_dir(self, app_overrides: list, idx: int) -> str:
        """``hydra.runtime.output_dir`` of job ``idx``, as Hydra's ``run_job`` sets it."""
        from hydra._internal.config_loader_impl import get_overrides_dirname

        from cl_sweep.config import fit_dirname

        out = []
        for part in self.parts:
            if part in (("job.override_dirname",), _FITTED):
                name = get_overrides_dirname(overrides=app_overrides, kv_sep=self.kv_sep, item_sep=self.item_sep,
                                             exclude_keys=self.exclude_keys)
                part = fit_dirname(name) if part == _FITTED else name
            elif isinstance(part, tuple):
                part = str(idx)
            out.append(part)
        return os.path.abspath(os.path.join(self.sweep_dir, "".join(out)))


class _Plain:
    """What `SweepComposer.plain_job` keeps per group: the resolved config and the leaf values."""

    def __init__(self, base: DictConfig, finished: DictConfig) -> None:
        task = OmegaConf.masked_copy(base, [k for k in base if k != "hydra"])
        OmegaConf.set_struct(task, True)
        resolved = OmegaConf.to_container(task, resolve=True)
        # a task config that interpolates could change with a leaf value: such groups compose each job
        self.cfg = resolved if resolved == OmegaConf.to_container(task, resolve=False) else None
        self.scratch = task  # leaf values are set here once, to read back what OmegaConf made of them
        self.values: dict[str, Any] = {}
        self.folder = _Folder(finished)

    def value(self, override: Any) -> tuple[bool, Any]:
        """(True, value) for a leaf override that sets a plain value on an existing value node."""
        line = override.input_line
        if line not in self.values:
            self.values[line] = (False, None)
            key, value = override.key_or_group, override.value()
            node = OmegaConf.select(self.scratch, key, default=_ABSENT, throw_on_missing=False)
            if (node is _ABSENT or override.is_add() or override.is_force_add() or override.is_delete() or override.package is not None
                    or isinstance(value, (dict, list)) or OmegaConf.is_config(node)):
                return self.values[line]
            try:
                OmegaConf.update(self.scratch, key, value, merge=True)
            except Exception:  # Hydra's own path raises its own error for it
                return self.values[line]
            parent_key, _, last = key.rpartition(".")
            parent = OmegaConf.select(self.scratch, parent_key) if parent_key else self.scratch
            if not OmegaConf.is_interpolation(parent, last):
                got = OmegaConf.select(self.scratch, key)
                if not OmegaConf.is_config(got):
                    self.values[line] = (True, got)
        return self.values[line]


class SweepComposer:
    """``compose(overrides)`` == ``loader.load_sweep_config(master_config, overrides)``, cached."""

    def __init__(self, loader: Any, master_config: DictConfig) -> None:
        self.loader = loader
        self.master = master_config
        self.hits = self.misses = self.factored = 0
        self._reference: tuple[str, ...] | None = None  # the first group composed: `_factor` builds on it
        self._locals: dict[tuple[str, ...], tuple[str | None, dict] | None] = {}
        self._bases: dict[tuple[str, ...], tuple[DictConfig, dict, list]] = {}
        self._leaf_keys: set[str] = set()  # override keys Hydra applied as config (value) overrides
        self._group_keys: set[str] = set()  # and those it used to build the defaults list
        self._parsed: dict[str, Any] = {}  # override line -> Hydra's parsed override (parsing is slow)
        self._plain: dict[tuple[str, ...], _Plain] = {}
        self._repos: dict[tuple[str, ...], Any] = {}
        self._probes: dict[tuple[str, ...], DictConfig] = {}
        self._hydra_overrides = list(OmegaConf.to_container(master_config.hydra.overrides.hydra))  # the command line's
        try:
            from hydra._internal.config_loader_impl import ConfigLoaderImpl
            from hydra.core.override_parser.overrides_parser import OverridesParser

            self._fast = isinstance(loader, ConfigLoaderImpl)
            self._parser = OverridesParser.create()
        except ImportError:  # another Hydra: its own path only
            self._fast = False

    def compose(self, sweep_overrides: Sequence[str]) -> DictConfig:
        if not self._fast:
            return self.loader.load_sweep_config(self.master, list(sweep_overrides))
        overrides, parsed, group_lines = self._split(sweep_overrides)
        if group_lines in self._bases:
            self.hits += 1
            return self._finish_base(group_lines, parsed)
        if group_lines is not None and self._factor(group_lines):
            self.factored += 1
            cfg = self._finish_base(group_lines, parsed)
            self._probes[group_lines] = cfg  # `plain_job` learns the group from it (no second copy)
            return cfg
        self.misses += 1
        return self._compose_with_hydra(overrides)

    def _factor(self, group_lines: tuple[str, ...]) -> bool:
        """Builds the base of ``group_lines`` from bases Hydra composed, without Hydra; False where it cannot.

        A sweep's groups are a product (9 activations x 5 optimizers: 45 bases). Against the first
        base composed (the reference), a group that changes one config group's choice (the
        reference's lines with ``optimizer=adam``) is composed by Hydra when the sweep reaches it; if its base differs
        from the reference only under one top-level key (``optimizer``), its choices only in their
        own entries, and not in its ``hydra`` node or config sources, that choice is *local*. A
        group whose changes from the reference are all local, each under a different key, is the
        reference with those keys' subtrees taken from the one-change bases: what Hydra composes,
        since no other config writes there (each change touched nothing else). A group whose
        one-change groups have not been composed yet is composed by Hydra itself, so a sparse sweep
        composes nothing more than before; a product grid swept row by row has them all in time:
        the A.6 grid needs 1 + 4 + 8 = 13 compositions by Hydra instead of 45. Anything else (a
        change of a ``@package _global_`` preset, a new top-level key) is composed by Hydra.
        """
        ref = self._reference
        if ref is None or len(group_lines) != len(ref):
            return False
        keys = [self._parsed[line].get_key_element() for line in group_lines]
        if keys != [self._parsed[line].get_key_element() for line in ref]:
            return False
        changed = [i for i, (a, b) in enumerate(zip(group_lines, ref)) if a != b]
        if len(changed) < 2:
            return False  # the reference itself, or a one-change group: Hydra composes it (and so learns it)
        parts = []
        for i in changed:
            single = ref[:i] + (group_lines[i],) + ref[i + 1 :]
            if single not in self._bases:  # composing it here would cost a sparse sweep more than it saves
                return False
            local = self._local(single)
            if local is None:
                return False
            parts.append((single, *local))
        tops = [top for _, top, _ in parts if top is not None]
        choice_keys = [k for _, _, diff in parts for k in diff]
        if len(set(tops)) != len(tops) or len(set(choice_keys)) != len(choice_keys):
            return False
        base, choices, sources = self._bases[ref]
        cfg, choices = copy.deepcopy(base), dict(choices)
        for single, top, diff in parts:
            choices.update(diff)
            if top is not None:
                node = copy.deepcopy(self._bases[single][0]._get_node(top))
                node._set_parent(cfg)
                cfg.__dict__["_content"][top] = node
        self._bases[group_lines] = (cfg, choices, sources)
        return True

    def _local(self, single: tuple[str, ...]) -> tuple[str | None, dict] | None:
        """For a one-change base: (the one top-level key where it differs from the reference or None,
        the choices it changes); None if the change reaches anywhere else."""
        if single in self._locals:
            return self._locals[single]
        ref_cfg, ref_choices, ref_sources = self._bases[self._reference]
        cfg, choices, sources = self._bases[single]
        found: tuple[str | None, dict] | None = None
        a = OmegaConf.to_container(ref_cfg, resolve=False)
        b = OmegaConf.to_container(cfg, resolve=False)
        if list(a) == list(b) and a["hydra"] == b["hydra"] and list(ref_choices) == list(choices) and (
            [(x.path, x.provider) for x in ref_sources] == [(x.path, x.provider) for x in sources]
        ):
            differ = [k for k in a if json.dumps(a[k]) != json.dumps(b[k])]  # key order counts too
            if len(differ) <= 1:
                found = (differ[0] if differ else None, {k: v for k, v in choices.items() if ref_choices.get(k) != v})
        self._locals[single] = found
        return found

    def _split(self, sweep_overrides: Sequence[str]) -> tuple[list[str], list, tuple[str, ...] | None]:
        """All of a job's overrides, parsed, and its group-override lines (None: not from the cache)."""
        overrides = self._hydra_overrides + list(sweep_overrides)
        if any(line not in self._parsed for line in overrides):
            for line, o in zip(overrides, self._parser.parse_overrides(overrides=overrides)):
                self._parsed.setdefault(line, o)
        parsed = [self._parsed[line] for line in overrides]
        keys = [o.get_key_element() for o in parsed]
        if not all(k in self._leaf_keys or k in self._group_keys for k in keys) or any(o.is_sweep_override() for o in parsed):
            return overrides, parsed, None
        return overrides, parsed, tuple(o.input_line for o, k in zip(parsed, keys) if k in self._group_keys)

    def _finish_base(self, group_lines: tuple[str, ...], parsed: list) -> DictConfig:
        base, choices, sources = self._bases[group_lines]
        leaf = [o for o in parsed if o.get_key_element() in self._leaf_keys]
        return self._finish(copy.deepcopy(base), parsed, leaf, choices, sources)

    def plain_job(self, sweep_overrides: Sequence[str], idx: int) -> PlainJob | None:
        """What the population launcher's collector takes from job ``idx`` (`PlainJob`), exactly as
        composing it and running it under Hydra's ``run_job`` gives, without a ``DictConfig`` per
        job; None where that cannot be told so (compose it then). The job's group must have been
        composed once (`compose`)."""
        if not self._fast:
            return None
        _, parsed, group_lines = self._split(sweep_overrides)
        if group_lines not in self._bases or any(o.is_hydra_override() for o in parsed[len(self._hydra_overrides) :]):
            return None
        plain = self._plain.get(group_lines)
        if plain is None:
            probe = self._probes.pop(group_lines, None)
            if probe is None:
                probe = self._finish_base(group_lines, parsed)
            plain = self._plain[group_lines] = _Plain(self._bases[group_lines][0], probe)
        if plain.cfg is None or not plain.folder.ok:
            return None
        cfg, app = _plain_copy(plain.cfg), []
        for o in parsed:
            if o.is_hydra_override():
                continue
            app.append(o)
            if o.get_key_element() in self._leaf_keys:
                ok, value = plain.value(o)
                if not ok:
                    return None
                *path, last = o.key_or_group.split(".")
                node = cfg
                for k in path:
                    node = node[k]
                node[last] = value
        return PlainJob(cfg, [o.input_line for o in app], plain.folder.output_dir(app, idx))

    def _compose_with_hydra(self, overrides: list[str]) -> DictConfig:
        """Hydra's ``_load_configuration_impl`` (run mode RUN, as ``load_sweep_config``), keeping its base."""
        from hydra._internal.defaults_list import create_defaults_list
        from hydra.types import RunMode

        loader, config_name = self.loader, self.master.hydra.job.config_name
        loader.ensure_main_config_source_available()
        parsed = [self._parsed.get(line) or self._parser.parse_overrides(overrides=[line])[0] for line in overrides]
        # One caching repository per search path (set by the Hydra overrides): each config file is
        # read and parsed once per sweep, not once per composition, as Hydra does within one.
        searchpath = tuple(o.input_line for o in parsed if o.is_hydra_override())
        repo = self._repos.get(searchpath)
        if repo is None:
            parsed, repo = loader._parse_overrides_and_create_caching_repo(config_name, overrides)
            self._repos[searchpath] = repo
        loader.validate_sweep_overrides_legal(overrides=parsed, run_mode=RunMode.RUN, from_shell=True)
        defaults_list = create_defaults_list(
            repo=repo, config_name=config_name, overrides_list=parsed, prepend_hydra=True, skip_missing=False
        )
        cfg = loader._compose_config_from_defaults_list(defaults=defaults_list.defaults, repo=repo)
        OmegaConf.set_struct(cfg, True)
        OmegaConf.set_readonly(cfg.hydra, False)
        leaf = list(defaults_list.config_overrides)
        leaf_ids = {id(o) for o in leaf}
        choices = dict(defaults_list.overrides.known_choices)
        sources = list(repo.get_sources())
        if all(any(o is p for p in parsed) for o in leaf):  # the cache relies on Hydra passing them through
            self._leaf_keys |= {o.get_key_element() for o in leaf}
            group = [o for o in parsed if id(o) not in leaf_ids]
            self._group_keys |= {o.get_key_element() for o in group}
            lines = tuple(o.input_line for o in group)
            self._bases[lines] = (copy.deepcopy(cfg), choices, sources)
            if self._reference is None:
                self._reference = lines
            self._probes[lines] = cfg  # the finished job config, until `plain_job` learns its group from it
        return self._finish(cfg, parsed, leaf, choices, sources)

    def _finish(self, cfg: DictConfig, parsed: list, leaf: list, choices: dict, sources: list) -> DictConfig:
        """The rest of Hydra's ``_load_configuration_impl`` and ``load_sweep_config``, step for step."""
        from hydra import __version__, version
        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
        from hydra.conf import ConfigSourceInfo
        from hydra.core.utils import JobRuntime

        ConfigLoaderImpl._apply_overrides_to_config(leaf, cfg)
        app_overrides = []
        for override in parsed:
            if override.is_hydra_override():
                cfg.hydra.overrides.hydra.append(override.input_line)
            else:
                cfg.hydra.overrides.task.append(override.input_line)
                app_overrides.append(override)
        with open_dict(cfg.hydra):
            cfg.hydra.runtime.choices.update(choices)
            for key in cfg.hydra.job.env_copy:
                cfg.hydra.job.env_set[key] = os.environ[key]
        cfg.hydra.runtime.version = __version__
        cfg.hydra.runtime.version_base = version.getbase()
        cfg.hydra.runtime.cwd = os.getcwd()
        cfg.hydra.runtime.config_sources = [
            ConfigSourceInfo(path=x.path, schema=x.scheme(), provider=x.provider) for x in sources
        ]
        if "name" not in cfg.hydra.job:
            cfg.hydra.job.name = JobRuntime().get("name")
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=app_overrides,
            kv_sep=cfg.hydra.job.config.override_dirname.kv_sep,
            item_sep=cfg.hydra.job.config.override_dirname.item_sep,
            exclude_keys=cfg.hydra.job.config.override_dirname.exclude_keys,
        )
        cfg.hydra.job.config_name = self.master.hydra.job.config_name
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        return cfg
