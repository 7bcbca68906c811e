"""The config schema: every field's range and type is checked at load time, with its dotted path;
the free option mappings are checked against their constructors; file-system mistakes are one line.

Cases are generated from the schema (``experiments.schema.fields``), so a new field with a range
is covered without editing this file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from balancebench.main import main
from experiments.config import CONFIG_DIR, RunConfig, load_run_config
from experiments.errors import ConfigError
from experiments.schema import Matches, OneOf, Range, extras, fields

SYNTHETIC = str(CONFIG_DIR / "synthetic.yaml")
QM9 = str(CONFIG_DIR / "qm9.yaml")


def nested(path: str, value: Any) -> dict[str, Any]:
    """``"train.lr", 0.1`` -> ``{"train": {"lr": 0.1}}``."""
    out: dict[str, Any] = {}
    node = out
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return out


def violations() -> list[tuple[str, Any]]:
    """(dotted path, a value just outside the declared range / choices) for every constrained field."""
    cases = []
    for path, hint in fields(RunConfig):
        for extra in extras(hint):
            if isinstance(extra, Range):
                for name, outside in (("ge", lambda b: b - 1), ("gt", lambda b: b), ("le", lambda b: b + 1),
                                      ("lt", lambda b: b)):
                    bound = getattr(extra, name)
                    if bound is not None:
                        cases.append((path, outside(bound)))
            elif isinstance(extra, OneOf):
                cases.append((path, "not-a-choice"))
            elif isinstance(extra, Matches):
                cases.append((path, "not matching"))
    return cases


@pytest.mark.parametrize("path, value", violations(), ids=[f"{p}={v}" for p, v in violations()])
def test_every_constrained_field_refuses_a_value_outside_its_range(path: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        load_run_config(SYNTHETIC, "tiny", nested(path, value))
    message = str(info.value)
    assert message.startswith(path) and "\n" not in message, message


@pytest.mark.parametrize("path", [p for p, _ in fields(RunConfig)])
def test_every_field_refuses_a_value_of_the_wrong_type(path: str) -> None:
    # a list of mappings fits no field of the schema (free option mappings expect a mapping)
    with pytest.raises(ConfigError) as info:
        load_run_config(SYNTHETIC, "tiny", nested(path, [{"x": 1}]))
    assert path in str(info.value) and "\n" not in str(info.value)


def test_the_shipped_configs_satisfy_the_schema() -> None:
    for name in ("toy", "synthetic", "multimnist", "qm9"):
        for scale in ("tiny", "small", "full"):
            load_run_config(CONFIG_DIR / f"{name}.yaml", scale)


def test_numbers_written_as_yaml_strings_are_read_as_numbers() -> None:
    # YAML 1.1 reads 1e-3 as a string; the schema converts it (and so for balancer hparams below)
    assert load_run_config(SYNTHETIC, "tiny", {"train": {"lr": "1e-3"}}).train.lr == 1e-3


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("balancebench: error:"), (code, err)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def train_args(tmp_path: Path, *extra: str, config: str = SYNTHETIC) -> list[str]:
    return ["train", "--config", config, "--scale", "tiny", "--out", str(tmp_path / "runs"), "--quiet", *extra]


@pytest.mark.parametrize("assignment, needle", [
    ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("train.epochs=-1", "train.epochs must be >= 1"),
    ("train.grad_clip=-1", "train.grad_clip must be > 0"),
    ("train.check_every=0", "train.check_every must be >= 1"),
    ("train.log_every=0", "train.log_every must be >= 1"),
    ("train.cosine_every=-1", "train.cosine_every must be >= 0"),
    ("train.max_steps_per_epoch=0", "train.max_steps_per_epoch must be >= 1"),
    ("train.weight_decay=-0.1", "train.weight_decay must be >= 0"),
    ("train.optimizer=adagrad", "train.optimizer must be one of adam, adamw, sgd"),
    ("train.scheduler=linear", "train.scheduler must be one of"),
    ("train.device=gpu", "train.device must be auto, cpu or cuda[:N]"),
    ("train.lr=.nan", "train.lr: expected a finite number"),
    ("train.epochs=2.5", "train.epochs: expected an integer"),
    ("balancer.hparams.gamma=abc", "balancer.hparams.gamma: expected a number"),
    ("balancer.hparams.gamma=-0.1", "balancer.hparams.gamma: famo: gamma must be >= 0"),
    ("balancer.hparams.update=sideways", "balancer.hparams.update"),
    ("balancer.hparams.gama=0.1", "balancer.hparams.gama: unknown option"),
    ("method_defaults.famo.w_lr=0", "method_defaults.famo.w_lr"),
    ("model.hidden=-3", "model.hidden must be >= 1"),
    ("model.depth=0", "model.depth must be >= 1"),
    ("model.dim=-3", "model.dim: unknown option; valid: hidden, depth"),
    ("benchmark.options.n_tasks=abc", "benchmark.options.n_tasks: expected an integer"),
    ("benchmark.options.correlation=2", "benchmark.options.correlation"),
    ("train.batch_size=100000", "train.batch_size 100000 leaves no full batch"),
])
def test_issue_cases_are_one_line_naming_the_dotted_path(tmp_path: Path, capsys, assignment: str, needle: str) -> None:
    args = train_args(tmp_path, "--balancer", "famo", "--set", assignment)
    assert_one_line(*run_cli(args, capsys), needle)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no half-made run left


def test_model_dim_of_qm9_is_a_positive_size(tmp_path: Path, capsys) -> None:
    assert_one_line(*run_cli(train_args(tmp_path, "--set", "model.dim=-3", config=QM9), capsys),
                    "model.dim must be >= 1, got -3")


def test_a_balancer_hparam_written_as_a_yaml_string_number_trains(tmp_path: Path, capsys) -> None:
    code, err = run_cli(train_args(tmp_path, "--balancer", "famo", "--set", "balancer.hparams.gamma=1e-3",
                                   "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2"), capsys)
    assert code == 0, err


# ------------------------------------------------------------------------ file-system mistakes
# Tests run as root, for whom a chmod'ed read-only folder is still writable, so the OS is made to
# refuse honestly: a path under a regular file (ENOTDIR on every POSIX system) and /sys, where
# the kernel refuses to create anything (EPERM; EROFS in containers that mount it read-only).
def sys_refuses() -> bool:
    try:
        os.mkdir("/sys/balancebench-probe")
    except OSError:
        return True
    os.rmdir("/sys/balancebench-probe")
    return False


def test_out_under_a_regular_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "afile").write_text("x")
    args = ["train", "--config", SYNTHETIC, "--scale", "tiny", "--out", str(tmp_path / "afile" / "runs"), "--quiet"]
    assert_one_line(*run_cli(args, capsys), "cannot create the folder", str(tmp_path / "afile"),
                    "a file is in the way")


@pytest.mark.skipif(not sys_refuses(), reason="this system lets /sys be written")
def test_out_at_a_folder_the_os_refuses(tmp_path: Path, capsys) -> None:
    args = ["train", "--config", SYNTHETIC, "--scale", "tiny", "--out", "/sys/kernel", "--quiet"]
    assert_one_line(*run_cli(args, capsys), "cannot create the folder /sys/kernel/")


def test_report_out_pointing_at_a_file(tmp_path: Path, capsys) -> None:
    code, err = run_cli(train_args(tmp_path, "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2"), capsys)
    assert code == 0, err
    (tmp_path / "report.md").write_text("mine")
    line = assert_one_line(*run_cli(["report", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "report.md")],
                                    capsys), str(tmp_path / "report.md"))
    assert "a file is in the way" in line or "it is a file" in line
    assert (tmp_path / "report.md").read_text() == "mine"


def test_unreadable_configs(tmp_path: Path, capsys) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00train: {}")
    assert_one_line(*run_cli(["train", "--config", str(tmp_path / "bin.yaml")], capsys), "not a text (UTF-8) file")
    assert_one_line(*run_cli(["train", "--config", str(tmp_path)], capsys), "is a folder")


def test_debug_keeps_the_traceback_of_an_os_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError):
        main(["--debug", "train", "--config", SYNTHETIC, "--scale", "tiny", "--out", str(tmp_path / "afile" / "r")])


def test_usage_errors_are_one_line(capsys) -> None:
    assert_one_line(*run_cli(["train", "--seed", "abc"], capsys), "--seed", "invalid int value")
    assert_one_line(*run_cli(["nosuchcommand"], capsys), "invalid choice")
    assert main(["--help"]) == 0
