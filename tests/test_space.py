"""Search space: conditional sampling, parameter names, and rebuilding configs from params."""

from __future__ import annotations

import optuna
import pytest

from hpsearch.space import config_from_params, param_dimensions, sample_config, searched_params
from hpsearch.spec import load_spec
from tests.conftest import STUDIES

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sampled_trials(n: int = 60) -> list[optuna.trial.FrozenTrial]:
    spec = load_spec(STUDIES / "fashion_mnist.toml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (sample_config(t, spec.search), 0.0)[1], n_trials=n)
    return study.trials


def test_optimizer_sub_parameters_are_conditional() -> None:
    trials = sampled_trials()
    names = {t.params["optimizer.name"] for t in trials}
    assert names == {"sgd", "adam", "adamw", "rmsprop", "adadelta"}
    for t in trials:
        opt = t.params["optimizer.name"]
        sub = {
            k.split(".")[1] for k in t.params if k.count(".") == 2 and k.startswith("optimizer.")
        }
        assert sub <= {opt}, (opt, t.params)
        if opt == "sgd":
            assert {"optimizer.sgd.momentum", "optimizer.sgd.nesterov"} <= set(t.params)
        if opt == "adadelta":  # its own lr range replaces the shared one
            assert "optimizer.adadelta.lr" in t.params and "optimizer.lr" not in t.params
        else:
            assert "optimizer.lr" in t.params


def test_every_sampled_name_is_a_known_dimension() -> None:
    spec = load_spec(STUDIES / "fashion_mnist.toml")
    dims = param_dimensions(spec.search)
    for t in sampled_trials(30):
        assert set(t.params) <= set(dims)
        for name, value in t.params.items():
            assert dims[name].contains(value), (name, value)


def test_workshop_warm_start_resolves_to_the_workshop_cnn() -> None:
    from hpsearch.model import WORKSHOP_CNN

    spec = load_spec(STUDIES / "fashion_mnist.toml")
    config = config_from_params(spec, searched_params(spec.search, spec.warm_start[0]))
    assert config.model == WORKSHOP_CNN.model
    assert config.train.optimizer == "sgd" and config.train.lr == 0.01
    assert config.train.momentum == 0.9 and config.train.nesterov is False
    assert config.train.batch_size == 32


def test_config_round_trips_through_params() -> None:
    spec = load_spec(STUDIES / "fashion_mnist.toml")
    for t in sampled_trials(20):
        rebuilt = config_from_params(spec, t.params)
        again = config_from_params(spec, rebuilt and t.params)
        assert rebuilt == again


def test_growth_per_block_and_cap() -> None:
    spec = load_spec(STUDIES / "cifar10.toml")
    params = {**spec.warm_start[0], "conv.n_blocks": 4, "conv.filters_base": 64}
    config = config_from_params(spec, searched_params(spec.search, params))
    assert config.model.conv_filters == ((64, 64), (128, 128), (256, 256), (512, 512))


def test_per_block_filters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s.toml"
    path.write_text(
        'name = "t"\n[data]\ndataset = "mnist"\n[budget]\nn_trials = 1\nmax_epochs = 1\n'
        "[search.conv]\nn_blocks = 2\nlayers_per_block = 2\nfilters = {choices = [8, 16]}\n"
    )
    spec = load_spec(path)
    assert {"conv.filters_0", "conv.filters_1"} <= set(param_dimensions(spec.search))
    config = config_from_params(
        spec,
        {
            "conv.filters_0": 16,
            "conv.filters_1": 8,
            "optimizer.name": "adam",
            "optimizer.lr": 1e-3,
            "optimizer.weight_decay": 0.0,
            "conv.kernel_size": 3,
            "conv.batch_norm": False,
            "conv.dropout": 0.1,
            "dense.n_layers": 1,
            "dense.units": 64,
            "dense.dropout": 0.0,
            "activation": "relu",
            "training.batch_size": 32,
            "optimizer.adam.beta_1": 0.9,
        },
    )
    assert config.model.conv_filters == ((16, 16), (8, 8))


def test_fixed_trial_rejects_a_value_outside_the_space() -> None:
    spec = load_spec(STUDIES / "smoke.toml")
    with pytest.raises(ValueError):
        config_from_params(spec, {"conv.filters_base": 999})
