"""Users' mistakes give one clear line on stderr, a non-zero exit, and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from balancers import create_balancer
from balancebench.main import main
from experiments.config import CONFIG_DIR

SYNTHETIC = str(CONFIG_DIR / "synthetic.yaml")
TOY = str(CONFIG_DIR / "toy.yaml")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("balancebench: error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def train_args(tmp_path: Path, *extra: str, config: str = SYNTHETIC) -> list[str]:
    return ["train", "--config", config, "--scale", "tiny", "--out", str(tmp_path), "--quiet", *extra]


def test_malformed_yaml(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("benchmark: {name: synthetic\ntrain: [\n")
    assert_one_line(*run_cli(["train", "--config", str(bad), "--out", str(tmp_path)], capsys), "malformed YAML", "line")


def test_missing_config_file(tmp_path: Path, capsys) -> None:
    assert_one_line(*run_cli(["train", "--config", str(tmp_path / "nope.yaml")], capsys), "config file not found")


def test_unknown_config_key_names_its_path(tmp_path: Path, capsys) -> None:
    assert_one_line(*run_cli(train_args(tmp_path, "--set", "train.learning_rate=0.1"), capsys), "train.learning_rate")


def test_unknown_balancer_lists_the_valid_ones(tmp_path: Path, capsys) -> None:
    assert_one_line(*run_cli(train_args(tmp_path, "--balancer", "famoo"), capsys), "famoo", "famo", "uniform")


def test_unknown_benchmark_lists_the_valid_ones(tmp_path: Path, capsys) -> None:
    assert_one_line(*run_cli(train_args(tmp_path, "--set", "benchmark.name=cifar"), capsys), "cifar", "qm9", "multimnist")


def test_unknown_variant_lists_the_valid_ones(tmp_path: Path, capsys) -> None:
    args = train_args(tmp_path, "--set", "benchmark.variant=CL_XX", config=str(CONFIG_DIR / "multimnist.yaml"))
    assert_one_line(*run_cli(args, capsys), "CL_XX", "CL_RR", "RL_RR")


def test_a_single_task_is_rejected(tmp_path: Path, capsys) -> None:
    assert_one_line(*run_cli(train_args(tmp_path, "--set", "benchmark.options.n_tasks=1"), capsys), "n_tasks")


def test_non_positive_learning_rate(tmp_path: Path, capsys) -> None:
    assert_one_line(*run_cli(train_args(tmp_path, "--set", "train.lr=0"), capsys), "train.lr must be > 0")


def test_negative_gamma_names_the_range(tmp_path: Path, capsys) -> None:
    args = train_args(tmp_path, "--balancer", "famo", "--set", "balancer.hparams.gamma=-0.1")
    assert_one_line(*run_cli(args, capsys), "gamma must be >= 0")


def test_unknown_hyperparameter(tmp_path: Path, capsys) -> None:
    args = train_args(tmp_path, "--balancer", "famo", "--set", "balancer.hparams.gama=0.1")
    assert_one_line(*run_cli(args, capsys), "gama", "gamma")


def test_famo_losses_below_min_losses_explain_min_losses(tmp_path: Path, capsys) -> None:
    # the toy's losses go negative (Appendix D's f2 at the start (9, 9): log(5e-6) + 6 < 0; the default
    # official toy's stay positive there); with min_losses 0 FAMO's log(loss - min) is undefined
    args = train_args(tmp_path, "--balancer", "famo", "--set", "balancer.hparams.min_losses=[0, 0]",
                      "--set", "benchmark.variant=appendix_d",
                      "--set", "benchmark.options.steps_per_epoch=50", "--set", "train.epochs=1",
                      "--set", "train.check_every=5", config=TOY)
    assert_one_line(*run_cli(args, capsys), "non-finite loss", "min_losses")


@pytest.mark.parametrize("weights, needle", [("[1, -1]", ">= 0"), ("[1, 1, 1]", "length"), ("[0, 0]", "sum to zero")])
def test_bad_fixed_weights(tmp_path: Path, capsys, weights: str, needle: str) -> None:
    args = train_args(tmp_path, "--balancer", "fixed", "--set", f"balancer.hparams.weights={weights}",
                      "--set", "benchmark.options.n_tasks=2")
    assert_one_line(*run_cli(args, capsys), needle)


def test_cuda_requested_without_a_gpu(tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_one_line(*run_cli(train_args(tmp_path, "--device", "cuda"), capsys), "CUDA is not available")


def test_resume_of_a_missing_run_directory(tmp_path: Path, capsys) -> None:
    assert_one_line(*run_cli(["train", "--resume", str(tmp_path / "gone")], capsys),
                    "not a run directory")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="train.lr must be > 0"):
        main(["--debug", *train_args(tmp_path, "--set", "train.lr=0")])


def test_wrong_length_loss_vector_at_the_api_is_one_line() -> None:
    balancer = create_balancer("famo", 3)
    with pytest.raises(ValueError) as info:
        balancer(torch.ones(4))
    assert "length n_tasks=3" in str(info.value) and "\n" not in str(info.value)
