"""Model builder: exact parameter counts, every sampled config builds, every optimizer works."""

from __future__ import annotations

import optuna
import pytest

from hpsearch.model import WORKSHOP_CNN, ModelConfig, TrainConfig, build_model, make_optimizer
from hpsearch.space import sample_config
from hpsearch.spec import load_spec
from tests.conftest import STUDIES


def test_workshop_cnn_has_exactly_1_199_882_parameters() -> None:
    model = build_model(WORKSHOP_CNN.model, (28, 28, 1), 10)
    assert model.count_params() == 1_199_882
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "InputLayer",
        "Conv2D",
        "Activation",
        "Conv2D",
        "Activation",
        "MaxPooling2D",
        "Dropout",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("study", "shape"), [("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))]
)
def test_every_sampled_architecture_builds(study: str, shape: tuple[int, int, int]) -> None:
    spec = load_spec(STUDIES / f"{study}.toml")
    study_ = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(12):
        trial = study_.ask()
        config = sample_config(trial, spec.search)
        model = build_model(config.model, shape, 10)
        assert model.output_shape == (None, 10)
        study_.tell(trial, 0.0)


def test_deep_valid_padding_still_builds() -> None:
    config = ModelConfig(conv_filters=((8, 8, 8),) * 4, kernel_size=5, padding="valid")
    assert build_model(config, (28, 28, 1), 10).output_shape == (None, 10)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adadelta"])
def test_each_optimizer_gets_its_sub_parameters(name: str) -> None:
    opt = make_optimizer(
        TrainConfig(
            optimizer=name,
            lr=0.02,
            weight_decay=1e-4,
            momentum=0.8,
            nesterov=True,
            rho=0.85,
            beta_1=0.88,
        )
    )
    assert type(opt).__name__.lower() == name
    assert float(opt.learning_rate) == pytest.approx(0.02)
    assert opt.weight_decay == pytest.approx(1e-4)
    if name == "sgd":
        assert opt.momentum == pytest.approx(0.8) and opt.nesterov is True
    if name in ("rmsprop", "adadelta"):
        assert opt.rho == pytest.approx(0.85)
    if name in ("adam", "adamw"):
        assert opt.beta_1 == pytest.approx(0.88)
