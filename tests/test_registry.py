"""Bring your own components: one decorated function each (cl_sweep.components.registry), loaded as plugins.

The contract under test is the README's "Your own components": the keyword-only parameters are
the schema, hyperparameters are traced unless declared static, value checks sit beside the
function, plugins come from a module name, a .py path or an installed entry point.
"""

from __future__ import annotations

import sys
import textwrap

import jax
import numpy as np
import optax
import pytest
from omegaconf import OmegaConf

import cl_sweep
from cl_sweep.training import engine
from cl_sweep.components import plugins, registry
from cl_sweep.config import ConfigError, validate
from cl_sweep.components.registry import ACTIVATIONS, OPTIMIZERS, positive
from cl_sweep.training.train import structure_of, train_jobs
from conftest import TEST_SLICE

SLICE = ["benchmark.limit_per_task=64", TEST_SLICE, "n_seeds=1", "progress=false"]


@pytest.fixture
def scratch(monkeypatch):
    """Registrations made by a test are removed afterwards (the ConfigStore node stays: harmless)."""
    made = []

    def track(reg, name):
        made.append((reg, name))
        return name

    yield track
    for reg, name in made:
        reg.unregister(name)


@pytest.fixture
def shifted(scratch):
    @cl_sweep.register_activation("shifted_relu_t", checks={"shift": lambda v, cfg: None if v < 1.0 else "it must be below 1"})
    def shifted_relu(x, *, shift: float = 0.5):
        return jax.nn.relu(x - shift)

    @cl_sweep.register_activation("blocky_t", static=("blocks",))
    def blocky(x, *, blocks: int = 10, gain: float = 1.0):
        return gain * jax.nn.relu(x)

    @cl_sweep.register_optimizer("adagrad_wd_t")
    def adagrad_wd(*, learning_rate: float = 2e-4, weight_decay: float = 1e-4):
        return optax.chain(optax.add_decayed_weights(weight_decay), optax.adagrad(learning_rate))

    scratch(ACTIVATIONS, "shifted_relu_t"), scratch(ACTIVATIONS, "blocky_t"), scratch(OPTIMIZERS, "adagrad_wd_t")
    return shifted_relu


def test_the_signature_is_the_schema(shifted, compose):
    cfg = compose(["activation=shifted_relu_t", "optimizer=adagrad_wd_t"])  # no YAML file anywhere
    assert OmegaConf.to_container(cfg.activation) == {"name": "shifted_relu_t", "shift": 0.5}
    assert OmegaConf.to_container(cfg.optimizer) == {"name": "adagrad_wd_t", "learning_rate": 2e-4, "weight_decay": 1e-4}
    validate(cfg)
    assert compose(["activation=shifted_relu_t", "activation.shift=1"]).activation.shift == 1.0  # typed: a float
    with pytest.raises(Exception, match="abc"):  # a string for a float is refused when Hydra composes
        compose(["activation=shifted_relu_t", "activation.shift=abc"])


@pytest.mark.parametrize("override", ["activation.shfit=1", "+activation.shfit=1", "++activation.shfit=1"])
def test_a_key_the_function_does_not_take_is_refused_listing_its_keys(shifted, compose, override):
    cfg = compose(["activation=shifted_relu_t", override])
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert "activation.shfit=1" in message and "(its keys: name, shift)" in message and "Did you mean activation.shift?" in message
    assert "\n" not in message


def test_value_checks_are_declared_beside_the_function(shifted, compose):
    with pytest.raises(ConfigError, match=r"activation.shift=2.0 is not allowed; it must be below 1"):
        validate(compose(["activation=shifted_relu_t", "activation.shift=2.0"]))
    # the built-ins declare theirs the same way: no name-keyed checks in config.validate
    assert ACTIVATIONS["topk_subtract"].checks and OPTIMIZERS["rmsprop"].checks["decay"] is registry.unit_interval
    with pytest.raises(ConfigError, match=r"activation.k=1001 .*1..1000 \(model.hidden_size\)"):
        validate(compose(["activation=topk_mask", "activation.k=1001"]))


def test_traced_unless_declared_static(shifted):
    assert ACTIVATIONS["shifted_relu_t"].traced == ("shift",) and ACTIVATIONS["shifted_relu_t"].static == ()
    assert ACTIVATIONS["blocky_t"].traced == ("gain",) and ACTIVATIONS["blocky_t"].static == ("blocks",)
    assert OPTIMIZERS["adagrad_wd_t"].traced == ("learning_rate", "weight_decay")
    assert ACTIVATIONS["lwta"].static == ("groups",) and OPTIMIZERS["adam"].static == ("bias_correction",)


def test_names_already_registered_and_bad_signatures_are_refused(scratch):
    with pytest.raises(ValueError, match="activation 'relu' is already registered .*choose another name"):
        cl_sweep.register_activation("relu")(lambda x: x)
    with pytest.raises(TypeError, match="keyword-only"):
        cl_sweep.register_activation("two_args_t")(lambda x, y: x)
    with pytest.raises(TypeError, match="keyword-only"):
        cl_sweep.register_optimizer("positional_t")(lambda learning_rate: optax.sgd(learning_rate))
    with pytest.raises(ValueError, match="'nope' is not one of its keyword-only hyperparameters"):
        cl_sweep.register_activation("bad_static_t", static=("nope",))(lambda x, *, a=1.0: x)
    assert "two_args_t" not in ACTIVATIONS and "bad_static_t" not in ACTIVATIONS


def _cfg(compose, *overrides):
    return OmegaConf.to_container(compose(["activation=shifted_relu_t", "optimizer=adagrad_wd_t", *SLICE, *overrides]), resolve=True)


@pytest.mark.slow
def test_a_traced_hyperparameter_swept_in_one_population_compiles_once_and_equals_alone(shifted, compose):
    cfgs = [_cfg(compose, f"activation.shift={s}") for s in (0.1, 0.2, 0.4)]
    assert len({structure_of(c) for c in cfgs}) == 1  # one program for the whole sweep
    engine._build_programs.cache_clear()
    together = train_jobs(cfgs, [[]] * len(cfgs))
    assert engine._build_programs.cache_info().misses == 1
    alone = [train_jobs([c], [[]])[0] for c in cfgs]
    for a, b in zip(together, alone):
        assert a["final_accuracy"] == b["final_accuracy"] and a["accuracy_matrix"] == b["accuracy_matrix"]
    assert len({r["final_accuracy"][0] for r in together}) > 1  # the shift does something
    static = [_cfg(compose, "activation=blocky_t", f"activation.blocks={b}") for b in (5, 10)]
    assert len({structure_of(c) for c in static}) == 2  # a static one: one program per value


@pytest.mark.slow
def test_a_users_component_trains_deterministically(shifted, compose):
    cfg = _cfg(compose, "activation.shift=0.1")
    first, second = train_jobs([cfg], [[]])[0], train_jobs([cfg], [[]])[0]
    assert first["final_accuracy"] == second["final_accuracy"] and first["status"] == "ok"
    assert first["activation"] == "shifted_relu_t" and first["hyperparameters"]["activation.shift"] == 0.1
    assert first["hyperparameters"]["optimizer.weight_decay"] == 1e-4


# --- plugins ----------------------------------------------------------------------------------
PLUGIN = textwrap.dedent("""
    import jax, optax
    import cl_sweep

    @cl_sweep.register_activation("{act}")
    def act(x, *, shift: float = 0.5):
        return jax.nn.relu(x - shift)

    @cl_sweep.register_optimizer("{opt}")
    def opt(*, learning_rate: float = 2e-4, weight_decay: float = 1e-4):
        return optax.chain(optax.add_decayed_weights(weight_decay), optax.adagrad(learning_rate))
""")


def test_a_plugin_from_a_loose_file_and_from_a_module_name(tmp_path, scratch, monkeypatch):
    (tmp_path / "loose_plugin_t.py").write_text(PLUGIN.format(act="from_file_t", opt="opt_file_t"))
    (tmp_path / "named_plugin_t.py").write_text(PLUGIN.format(act="from_name_t", opt="opt_name_t"))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("from_file_t", "from_name_t"):
        scratch(ACTIVATIONS, name)
    for name in ("opt_file_t", "opt_name_t"):
        scratch(OPTIMIZERS, name)
    try:
        assert plugins.load_plugins([str(tmp_path / "loose_plugin_t.py"), "named_plugin_t"]) == ["loose_plugin_t", "named_plugin_t"]
        assert plugins.load_plugins(["named_plugin_t"]) == ["named_plugin_t"]  # idempotent: nothing registered twice
        assert "from_file_t" in ACTIVATIONS and "opt_name_t" in OPTIMIZERS
        assert ACTIVATIONS["from_file_t"].source == "loose_plugin_t"
    finally:
        for module in ("loose_plugin_t", "named_plugin_t"):
            sys.modules.pop(module, None)
        for plugin in (str(tmp_path / "loose_plugin_t.py"), "named_plugin_t"):
            plugins._loaded.pop(plugin, None)


@pytest.mark.parametrize("plugin,needle", [
    ("no_such_plugin_t", "ModuleNotFoundError: No module named 'no_such_plugin_t'"),
    ("/no/such/file_t.py", "FileNotFoundError: no file /no/such/file_t.py"),
])
def test_a_plugin_that_fails_to_import_gets_one_paragraph(plugin, needle):
    with pytest.raises(plugins.PluginError) as info:
        plugins.load_plugins([plugin])
    message = str(info.value)
    assert needle in message and repr(plugin) in message and "nothing was trained" in message and "\n" not in message


def test_a_plugin_that_raises_or_reuses_a_name(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin_t.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "clash_plugin_t.py").write_text("import cl_sweep\ncl_sweep.register_activation('hard_ash')(lambda x: x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(plugins.PluginError, match="'broken_plugin_t': RuntimeError: boom"):
        plugins.load_plugins(["broken_plugin_t"])
    with pytest.raises(plugins.PluginError, match="activation 'hard_ash' is already registered"):
        plugins.load_plugins(["clash_plugin_t"])
    assert ACTIVATIONS["hard_ash"].source == "cl_sweep.components.activations"


def test_plugins_are_read_from_the_command_line_before_hydra_composes():
    assert plugins.plugins_from_argv(["activation=x", "plugins=[a,b/c.py]", "n_seeds=1"]) == ["a", "b/c.py"]
    assert plugins.plugins_from_argv(["+plugins=[a]"]) == ["a"]
    assert plugins.plugins_from_argv(["n_seeds=1"]) == []
    with pytest.raises(plugins.PluginError, match="plugins cannot be swept"):
        plugins.plugins_from_argv(["plugins=a,b"])


def test_builtin_labels_come_from_the_registry():
    from cl_sweep.analysis import paper

    assert paper.activation_name("hard_ash") == "Hard ASH" == ACTIVATIONS["hard_ash"].label
    assert paper.optimizer_name("rmsprop") == "RMSprop" and paper.activation_name("sdm_topk") == "SDMLP (GABA Top-K)"
    assert paper.activation_name("somebody_elses") == "somebody_elses"


def test_builtins_use_the_public_api():
    for reg, module in ((ACTIVATIONS, "cl_sweep.components.activations"), (OPTIMIZERS, "cl_sweep.components.optimizers")):
        assert reg.builtin_module == module
        assert {c.source for c in reg.values() if not c.name.endswith("_t")} == {module}
    from cl_sweep.components.registry import MODELS

    assert {n: c.source for n, c in MODELS.items() if not n.endswith("_t")} == {
        "mlp": "cl_sweep.models.mlp", "sdmlp": "cl_sweep.models.sdmlp", "flymodel": "cl_sweep.models.flymodel"}
    assert positive(0.0, {}) and positive(1e-3, {}) is None
    assert np.isclose(OPTIMIZERS["adagrad"].params[0].default, 2e-4)


@pytest.mark.slow
def test_a_plugin_reaches_the_workers_of_the_parallel_launcher(tmp_path):
    """joblib's worker processes compose nothing: each job imports its config's plugins itself."""
    from conftest import REPO, run_cli

    (tmp_path / "my_components.py").write_text((REPO / "examples" / "my_components.py").read_text())
    proc = run_cli("--multirun", "plugins=[my_components]", "activation=shifted_relu", "activation.shift=0.1,0.2",
                   "hydra/launcher=parallel", *SLICE, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = sorted(tmp_path.glob("multirun/*/*/result.json"))
    assert len(results) == 2 and all('"activation": "shifted_relu"' in p.read_text() for p in results)
