"""Your own model: a flax.linen or flax.nnx module (or plain functions) registered with
``cl_sweep.register_model``, and the built-in MLP at any depth (cl_sweep.models).

The contract under test is the README's "Your own components": the module's fields (linen) or the
factory's keyword-only parameters are the schema, the engine applies the `activation` group
where the module calls it, and the model trains with every optimizer, strategy and launcher,
deterministically and with the same numbers in a population as alone. Real MNIST, small slices.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from omegaconf import OmegaConf

import cl_sweep
from cl_sweep.training import engine
from cl_sweep.config import ConfigError, validate
from cl_sweep.components.registry import MODELS
from cl_sweep.training.train import structure_of, train_jobs
from conftest import TEST_SLICE

SLICE = ["benchmark.limit_per_task=256", TEST_SLICE, "n_seeds=1", "progress=false"]


class LinenNet(nn.Module):
    """Two dense layers with biases, the chosen activation after each hidden one."""

    width: int = 32
    depth: int = 2
    num_classes: int = 10  # filled in from the data set

    @nn.compact
    def __call__(self, x, activation):
        for _ in range(self.depth):
            x = activation(nn.Dense(self.width)(x))
        return nn.Dense(self.num_classes)(x)


class NNXNet(nnx.Module):
    def __init__(self, din: int, width: int, dout: int, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(din, width, rngs=rngs)
        self.out = nnx.Linear(width, dout, rngs=rngs)

    def __call__(self, x, activation):
        return self.out(activation(self.hidden(x)))


class WithBatchNorm(nn.Module):
    @nn.compact
    def __call__(self, x, activation):
        return nn.Dense(10)(nn.BatchNorm(use_running_average=False)(x))


@pytest.fixture(scope="module")
def user_models():
    cl_sweep.register_model("linen_t")(LinenNet)

    @cl_sweep.register_model("nnx_t")
    def nnx_net(*, width: int = 32, input_size: int, num_classes: int, rngs: nnx.Rngs):
        return NNXNet(input_size, width, num_classes, rngs)

    @cl_sweep.register_model("not_a_model_t")
    def not_a_model(*, width: int = 3):
        return {"w": width}

    cl_sweep.register_model("batchnorm_t")(WithBatchNorm)
    names = ("linen_t", "nnx_t", "not_a_model_t", "batchnorm_t")
    yield names
    for name in names:
        MODELS.unregister(name)


def _cfg(compose, *overrides):
    return OmegaConf.to_container(compose([*overrides, "activation=relu", "optimizer=adam", *SLICE]), resolve=True)


def test_a_linen_modules_fields_and_a_factorys_signature_are_the_schema(user_models, compose):
    linen = compose(["model=linen_t"]).model
    assert dict(linen) == {"name": "linen_t", "width": 32, "depth": 2}  # num_classes is filled in, not a key
    assert dict(compose(["model=nnx_t"]).model) == {"name": "nnx_t", "width": 32}  # so are input_size and rngs
    with pytest.raises(ConfigError, match=r"model.widht=3 .*its keys: name, width, depth.*Did you mean model.width"):
        validate(compose(["model=linen_t", "model.widht=3"]))
    with pytest.raises(ConfigError, match="model.widht"):
        validate(compose(["model=linen_t", "+model.widht=3"]))
    with pytest.raises(Exception, match="width"):  # a string for an int fails when Hydra composes
        compose(["model=linen_t", "model.width=wide"])
    assert MODELS["linen_t"].static == ("width", "depth")  # a model's hyperparameters shape its program


def test_a_model_the_engine_cannot_train_is_refused_before_training(user_models, compose):
    with pytest.raises(ConfigError, match=r"model=not_a_model_t cannot be built: .*returned dict.*flax.linen.Module"):
        validate(compose(["model=not_a_model_t"]))
    cfg = _cfg(compose, "model=batchnorm_t")
    with pytest.raises(TypeError, match="batch_stats.*trains 'params' only"):
        train_jobs([cfg], [[]])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["linen_t", "nnx_t"])
def test_a_flax_model_learns_deterministically_and_equals_itself_alone_in_a_population(user_models, compose, model):
    cfgs = [_cfg(compose, f"model={model}", f"optimizer.learning_rate={lr}") for lr in (3e-3, 1e-2)]
    assert len({structure_of(c) for c in cfgs}) == 1  # a traced learning rate: one program for both
    engine._build_programs.cache_clear()
    together = train_jobs(cfgs, [[]] * 2)
    assert engine._build_programs.cache_info().misses == 1
    alone = [train_jobs([c], [[]])[0] for c in cfgs]
    again = train_jobs([cfgs[0]], [[]])[0]
    for a, b in zip(together, alone):
        assert a["status"] == "ok" and a["accuracy_matrix"] == b["accuracy_matrix"]
        assert a["accuracy_matrix"][0][0][0] > 0.9  # task 1 (0 vs 1) is learned
        assert 0 < a["active_fraction"][0][0] < 1  # the activation ReLU was applied where the module asks
    assert again["accuracy_matrix"] == alone[0]["accuracy_matrix"]
    assert together[0]["final_accuracy"] != together[1]["final_accuracy"]
    assert together[0]["model"] == model and together[0]["hyperparameters"]["model.width"] == 32


@pytest.mark.slow
def test_a_flax_model_takes_a_strategy(user_models, compose):
    nnx_adam = ("model=nnx_t", "optimizer.learning_rate=3e-3")
    plain = train_jobs([_cfg(compose, *nnx_adam)], [[]])[0]
    ewc0 = train_jobs([_cfg(compose, *nnx_adam, "strategy=ewc", "strategy.lambda=0.0", "strategy.samples=32")], [[]])[0]
    ewc = train_jobs([_cfg(compose, *nnx_adam, "strategy=ewc", "strategy.lambda=1000.0", "strategy.samples=32")], [[]])[0]
    assert ewc0["final_accuracy"] == pytest.approx(plain["final_accuracy"], abs=0.01)
    assert ewc["status"] == "ok" and ewc["accuracy_matrix"] != plain["accuracy_matrix"]


# --- the built-in MLP at any depth ----------------------------------------------------------------
def _mlp(compose, *overrides):
    return OmegaConf.to_container(compose([*overrides, "activation=relu", "optimizer=adagrad", "optimizer.learning_rate=0.01", *SLICE]), resolve=True)


@pytest.mark.slow
def test_a_deep_mlp_learns_and_is_deterministic_and_one_width_is_the_paper_mlp(compose):
    deep = _mlp(compose, "model.hidden_size=[64,32]", "model.weight_norm=[true,true,false]")
    first, second = train_jobs([deep], [[]])[0], train_jobs([deep], [[]])[0]
    assert first["status"] == "ok" and first["accuracy_matrix"] == second["accuracy_matrix"]
    assert first["accuracy_matrix"][0][0][0] > 0.9
    assert first["hyperparameters"]["model.hidden_size"] == [64, 32]
    listed = train_jobs([_mlp(compose, "model.hidden_size=[64]")], [[]])[0]
    plain = train_jobs([_mlp(compose, "model.hidden_size=64")], [[]])[0]
    assert listed["accuracy_matrix"] == plain["accuracy_matrix"]  # a list of one width: the same network


def test_deep_mlp_parameters_and_forward():
    from cl_sweep.models import build, get_model

    model = build(get_model("mlp"), {"hidden_size": (16, 8, 4), "weight_norm": (True, False, True, False), "update_clip": None},
                  input_size=12, num_classes=3)
    params = model.init(jax.random.PRNGKey(0))
    assert {k: v.shape for k, v in params.items()} == {"w1": (12, 16), "w2": (16, 8), "w3": (8, 4), "w4": (4, 3)}
    logits, hidden = model.apply(params, jnp.ones((5, 12)), jax.nn.relu, None)
    assert logits.shape == (5, 3) and hidden.shape == (5, 16 + 8 + 4)  # every hidden layer's activity
    assert model.fused.width == 16  # the fused kernel may update the weight-normalised first layer
    np.testing.assert_allclose(np.std(np.asarray(params["w1"])), np.sqrt(2 / 12), rtol=0.3)  # Kaiming


@pytest.mark.parametrize(
    "overrides,key,allowed",
    [
        (["model.hidden_size=[64,32]"], "model.weight_norm", "list of 3 booleans"),
        (["model.hidden_size=[64,0]", "model.weight_norm=[true,true,false]"], "model.hidden_size", "positive integer, or a list"),
        (["model.hidden_size=[64,32]", "model.weight_norm=[true,true,false]", "activation=topk_mask", "activation.k=40"],
         "activation.k", "1..32"),
        (["model.hidden_size=[64,30]", "model.weight_norm=[true,true,false]", "activation=lwta", "activation.groups=4"],
         "activation.groups", "divide model.hidden_size=[64, 30] (allowed: 1, 2)"),
    ],
)
def test_deep_mlp_keys_are_checked_against_every_layer(compose, overrides, key, allowed):
    with pytest.raises(ConfigError) as info:
        validate(compose(overrides))
    assert key in str(info.value) and allowed in str(info.value)
