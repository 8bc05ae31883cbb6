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
"""

from __future__ import annotations

import copy
import os
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict


class SweepComposer:
    """``compose(overrides)`` == ``loader.load_sweep_config(master_config, overrides)``, cached."""

    def __init__(self, loader: Any, master_config: DictConfig) -> None:
        self.loader = loader
        self.master = master_config
        self.hits = self.misses = 0
        self._bases: dict[tuple[str, ...], tuple[DictConfig, dict, list]] = {}
        self._leaf_keys: set[str] = set()  # override keys Hydra applied as config (value) overrides
        self._group_keys: set[str] = set()  # and those it used to build the defaults list
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
        overrides = list(OmegaConf.to_container(self.master.hydra.overrides.hydra)) + list(sweep_overrides)
        parsed = self._parser.parse_overrides(overrides=overrides)
        keys = [o.get_key_element() for o in parsed]
        known = all(k in self._leaf_keys or k in self._group_keys for k in keys)
        if known and not any(o.is_sweep_override() for o in parsed):
            group_lines = tuple(o.input_line for o, k in zip(parsed, keys) if k in self._group_keys)
            if group_lines in self._bases:
                self.hits += 1
                base, choices, sources = self._bases[group_lines]
                leaf = [o for o, k in zip(parsed, keys) if k in self._leaf_keys]
                return self._finish(copy.deepcopy(base), parsed, leaf, choices, sources)
        self.misses += 1
        return self._compose_with_hydra(overrides)

    def _compose_with_hydra(self, overrides: list[str]) -> DictConfig:
        """Hydra's ``_load_configuration_impl`` (run mode RUN, as ``load_sweep_config``), keeping its base."""
        from hydra._internal.defaults_list import create_defaults_list
        from hydra.types import RunMode

        loader, config_name = self.loader, self.master.hydra.job.config_name
        loader.ensure_main_config_source_available()
        parsed, repo = loader._parse_overrides_and_create_caching_repo(config_name, overrides)
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
            self._bases[tuple(o.input_line for o in group)] = (copy.deepcopy(cfg), choices, sources)
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
