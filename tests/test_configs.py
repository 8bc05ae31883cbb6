"""Every option of every config group composes, is typed, passes validation and builds its components."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from cl_sweep.components.activations import ACTIVATIONS
from cl_sweep.config import ConfigError, validate
from cl_sweep.components.optimizers import OPTIMIZERS
from cl_sweep.components.registry import BENCHMARKS, MODELS
from cl_sweep.training.train import hyperparameters_of, members_of, structure_of


def options(conf_dir, group):
    """A group's options: the registered components (activation, optimizer, model) or the YAML files."""
    return sorted({"activation": ACTIVATIONS, "optimizer": OPTIMIZERS, "model": MODELS, "benchmark": BENCHMARKS}[group])


def test_group_files_match_registries_and_schemas(conf_dir):
    for group in ("activation", "optimizer", "model", "benchmark", "strategy"):  # the signatures are the schemas: no YAML
        assert not (conf_dir / group).exists(), group
    assert options(conf_dir, "benchmark") == ["iid_mnist", "permuted_mnist", "split_fashion_mnist", "split_mnist", "split_tfds"]


def test_defaults(compose):
    cfg = compose([])
    assert cfg.activation.name == "hard_ash" and cfg.optimizer.name == "adagrad"
    assert cfg.benchmark.name == "split_mnist" and cfg.model.name == "mlp"
    assert cfg.n_seeds == 5 and cfg.seed == 0
    # docs/protocol.md, the A.6 default column
    assert (cfg.activation.alpha, cfg.activation.z_k, cfg.activation.beta) == (3.0, 2.3, 2.0)
    assert (cfg.optimizer.learning_rate, cfg.optimizer.initial_accumulator_value) == (2e-4, 1e-6)
    assert (cfg.benchmark.batch_size, cfg.benchmark.epochs_per_task, cfg.benchmark.num_tasks) == (64, 1, 5)
    assert (cfg.model.hidden_size, list(cfg.model.weight_norm), cfg.model.update_clip) == (1000, [True, False], 0.01)


@pytest.mark.parametrize(
    "group,option,expected",
    [
        ("optimizer", "rmsprop", {"learning_rate": 5.5e-6, "decay": 0.9993}),
        ("optimizer", "adam", {"learning_rate": 1e-5, "b1": 0.98, "b2": 0.9995, "bias_correction": True}),
        ("optimizer", "sgd_exp_decay", {"learning_rate": 1e-2, "decay_rate": 0.7, "transition_steps": 200, "staircase": True}),
        ("optimizer", "sgd", {"learning_rate": 4e-4}),
        ("optimizer", "sgdm", {"learning_rate": 1e-5, "momentum": 0.994}),
        ("activation", "ash", {"alpha": 3.0, "z_k": 2.3}),
        ("activation", "topk_subtract", {"k": 64}),
        ("activation", "topk_mask", {"k": 64}),
        ("activation", "lwta", {"groups": 50}),
        ("activation", "elephant", {"a": 0.16, "d": 4.0}),
    ],
)
def test_protocol_default_values(compose, group, option, expected):
    cfg = compose([f"{group}={option}"])
    node = OmegaConf.to_container(cfg[group])
    assert node.pop("name") == option
    assert node == expected


@pytest.mark.parametrize("group", ["activation", "optimizer", "benchmark", "model"])
def test_every_option_composes_validates_and_builds(compose, conf_dir, group):
    for option in options(conf_dir, group):
        if option == "split_tfds":  # needs a prepared data set: tests/test_tfds_benchmark.py checks it on one
            continue
        cfg = compose([f"{group}={option}"])
        assert cfg[group].name == option
        validate(cfg)
        plain = OmegaConf.to_container(cfg, resolve=True)
        structure = structure_of(plain)
        members = members_of(plain, [0, 1])
        assert len(members) == 2 and members[0].seed == 0
        assert dict(structure.model_static)["hidden_size"] == cfg.model.hidden_size
        hp = hyperparameters_of(plain)
        assert all("." in k for k in hp)


def test_misspelt_key_fails_before_training(compose):
    with pytest.raises(ConfigError) as info:
        validate(compose(["activation.alphaa=3"]))  # the node is open: the paragraph names the keys it has
    assert "activation.alphaa=3" in str(info.value) and "alpha, z_k, beta" in str(info.value)
    with pytest.raises(ConfigError, match="model.alphaa=3.*hidden_size, weight_norm, update_clip"):  # models alike
        validate(compose(["model.alphaa=3"]))
    with pytest.raises(ConfigError, match="benchmark.alphaa=3.*num_tasks, classes_per_task, validation_fraction, batch_size"):
        validate(compose(["benchmark.alphaa=3"]))
    with pytest.raises(Exception, match="alphaa"):  # the top level's dataclass still stops it at compose time
        compose(["early_stop.alphaa=3"])


@pytest.mark.parametrize(
    "overrides,key,allowed",
    [
        (["+optimizer.lerning_rate=0.1"], "optimizer.lerning_rate", "learning_rate, initial_accumulator_value"),
        (["++activation.zk=2.0"], "activation.zk", "alpha, z_k, beta"),
        (["activation=relu", "+activation.alpha=3.0"], "activation.alpha", "its keys: name)"),
        (["+model.hidden=10"], "model.hidden", "hidden_size"),
        (["+benchmark.epochs=2"], "benchmark.epochs", "epochs_per_task"),
        (["strategy=ewc", "+strategy.lamda=5"], "strategy.lamda", "lambda, samples"),
        (["+early_stop.enable=true"], "early_stop.enable", "enabled"),
        (["+nseeds=3"], "nseeds", "n_seeds"),
    ],
)
def test_keys_added_with_plus_are_refused(compose, overrides, key, allowed):
    """Hydra's struct mode stops `activation.alphaa=3` but lets `+`/`++` add any key: validate refuses them."""
    cfg = compose(overrides)  # composes: Hydra adds the key
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert f"{key}=" in message and allowed in message and "\n" not in message
    assert "nothing was trained" in message


def test_a_config_file_with_an_unknown_key_is_refused(tmp_path, compose):
    """A user's own group file (joined through hydra.searchpath) that does not extend the option's
    schema may not smuggle in a key either (one that does extend it fails at compose time)."""
    (tmp_path / "optimizer").mkdir()
    (tmp_path / "optimizer" / "mine.yaml").write_text("name: adagrad\nlearning_rate: 1.0e-3\ninitial_accumulator_value: 0.0\n")
    (tmp_path / "optimizer" / "typo.yaml").write_text("name: adagrad\nlearning_rate: 1.0e-3\nlr_decay: 0.5\n")
    validate(compose(["optimizer=mine", f"hydra.searchpath=[file://{tmp_path}]"]))  # only known keys: fine
    with pytest.raises(ConfigError, match="optimizer.lr_decay=0.5 is not allowed; optimizer=adagrad has no key"):
        validate(compose(["optimizer=typo", f"hydra.searchpath=[file://{tmp_path}]"]))


def test_mistyped_value_fails_at_compose_time(compose):
    with pytest.raises(Exception) as info:
        compose(["activation.k=many", "activation=topk_subtract"])
    assert "many" in str(info.value)


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["optimizer.learning_rate=0"], "optimizer.learning_rate"),
        (["optimizer.learning_rate=-1e-3"], "optimizer.learning_rate"),
        (["optimizer=rmsprop", "optimizer.decay=1.0"], "optimizer.decay"),
        (["optimizer=sgdm", "optimizer.momentum=-0.1"], "optimizer.momentum"),
        (["optimizer=adam", "optimizer.b2=1.5"], "optimizer.b2"),
        (["activation=topk_subtract", "activation.k=0"], "activation.k"),
        (["activation=topk_mask", "activation.k=1001"], "activation.k"),
        (["activation=lwta", "activation.groups=3"], "activation.groups"),
        (["benchmark.limit_per_task=0"], "benchmark.limit_per_task"),
        (["n_seeds=0"], "n_seeds"),
        (["model.update_clip=-1"], "model.update_clip"),
        (["optimizer=sgd_exp_decay", "optimizer.decay_rate=0"], "optimizer.decay_rate"),
        (["optimizer=sgd_exp_decay", "optimizer.transition_steps=0"], "optimizer.transition_steps"),
        (["tag='a,b'"], "tag"),
        (["tag=' wide'"], "tag"),
    ],
)
def test_out_of_range_values_raise_config_error(compose, overrides, key):
    cfg = compose(overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert key in message and "\n" not in message
    assert "nothing was trained" in message


def test_a_tag_is_a_label_of_the_results_not_of_the_grid_point(compose):
    from cl_sweep.training.train import hyperparameters_of

    tagged, plain = compose(["tag=wide_lr"]), compose([])
    validate(tagged)
    assert tagged.tag == "wide_lr" and plain.tag is None
    assert hyperparameters_of(tagged) == hyperparameters_of(plain)  # the same grid point, told apart by its source


def test_topk_k_bound_follows_hidden_size(compose):
    validate(compose(["activation=topk_subtract", "activation.k=200", "model.hidden_size=200"]))
    with pytest.raises(ConfigError, match="1..200"):
        validate(compose(["activation=topk_subtract", "activation.k=201", "model.hidden_size=200"]))


@pytest.mark.parametrize("option", ["none", "ewc", "online_ewc", "mas"])
def test_every_strategy_composes_validates_and_builds(compose, conf_dir, option):
    assert not (conf_dir / "strategy").exists()  # the registered functions' signatures are the schemas
    cfg = compose([f"strategy={option}"])
    validate(cfg)
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert structure_of(plain).strategy == option
    hp = hyperparameters_of(plain)
    assert ("strategy.name" in hp) == (option != "none")


def test_strategy_values_are_checked(compose):
    with pytest.raises(ConfigError, match="strategy.lamda=3.*Did you mean strategy.lambda"):
        validate(compose(["strategy=ewc", "strategy.lamda=3"]))
    with pytest.raises(ConfigError, match="strategy.lambda='strong'.*a number >= 0"):  # the node is untyped: the check types it
        validate(compose(["strategy=ewc", "strategy.lambda=strong"]))
    for overrides, key in ((["strategy=ewc", "strategy.lambda=-1"], "strategy.lambda"),
                           (["strategy=online_ewc", "strategy.gamma=2"], "strategy.gamma"),
                           (["strategy=mas", "strategy.samples=0"], "strategy.samples")):
        with pytest.raises(ConfigError, match=key):
            validate(compose(overrides))
