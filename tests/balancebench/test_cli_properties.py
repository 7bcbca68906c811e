"""Property-based (Hypothesis): random values and types for every config field and every CLI option
give exit code 0 or 2, never a traceback, one line on stderr on exit 2, and never change an
existing run directory or study storage.

The config fields are generated from the schema (``experiments.schema.fields``) and the free option
mappings from the constructors' signatures, and the CLI options from the argparse parsers, so a new
field, hyperparameter or option is covered without editing this file. Everything runs in-process
through ``balancebench.main.main``. To stay fast, training is capped at 1 epoch of at most 2 steps
(after the config has been validated in full), a drawn ``num_threads`` does not resize the test
process's thread pool, and the commands whose work is long (study, demo, bench, claims, toy) stop
where their work would begin, after their inputs have been checked (:class:`Reached`). Sizes in
the free option mappings are drawn from small numbers: a valid but huge dataset or layer would
only test the machine's memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import itertools
import os
import shlex
import types
import typing
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balancers import balancer_info, list_balancers
from experiments.benchmarks.synthetic import SyntheticBenchmark
from experiments.benchmarks.toy import ToyBenchmark
from balancebench.main import _load_extra_parsers, build_parser, main
from experiments.config import CONFIG_DIR, RunConfig, deep_merge
from experiments.errors import UserError
from experiments.schema import OneOf, Range, fields
from experiments.training.trainer import Trainer

SYNTHETIC = str(CONFIG_DIR / "synthetic.yaml")
TOY = str(CONFIG_DIR / "toy.yaml")
#: examples per property (CI: the default); BALANCEBENCH_PROPERTY_EXPLORE=1 draws new ones each run
EXAMPLES = int(os.environ.get("BALANCEBENCH_PROPERTY_EXAMPLES", "40"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    derandomize=not os.environ.get("BALANCEBENCH_PROPERTY_EXPLORE"),
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Reached(Exception):
    """Raised where a long command's work would begin: its inputs were accepted."""


# ----------------------------------------------------------------------------------- values
SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"), max_size=10)
WORDS = st.sampled_from(["", "abc", "1e-3", "-1", "0", ".nan", "auto", "cpu", "cuda", "cuda:0", "adam", "sgd",
                         "none", "cosine", "plateau", "step", "tiny", "full", "literature", "initial", "uniform",
                         "famo", "same_batch", "lagged", "null", "[1, 2]", "{a: 1}", "true"])


def scalars(big: bool) -> st.SearchStrategy[Any]:
    ints = st.integers(-3, 40) | (st.sampled_from([0, -1, 2**31, 2**63, 10**30, 10**400]) if big else st.integers(-3, 40))
    floats = st.floats(allow_nan=True, allow_infinity=True) if big else st.floats(-100, 100)
    return st.none() | st.booleans() | ints | floats | SAFE_TEXT | WORDS


def values(big: bool = True) -> st.SearchStrategy[Any]:
    """Random values of random types: scalars, lists and mappings of them."""
    return st.recursive(scalars(big), lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text("abcxyz_", min_size=1, max_size=4), inner, max_size=2), max_leaves=4)


def junk() -> st.SearchStrategy[Any]:
    """A value of any type: the mistakes the schema's type checks are for."""
    return values(big=True)


def from_hint(hint: Any, big: bool) -> st.SearchStrategy[Any]:
    """Values for a type hint from the schema or a constructor signature: mostly of its type, near
    and past its declared bounds and choices, sometimes of any type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        base, *extra = args
        near = []
        for e in extra:
            if isinstance(e, Range):
                near += [b + d for b in (e.ge, e.gt, e.le, e.lt) if b is not None for d in (-1, -0.5, 0, 0.5, 1)]
            if isinstance(e, OneOf):
                near += list(e.choices)
        strategy = from_hint(base, big)
        return st.sampled_from(near) | strategy if near else strategy
    if origin in (typing.Union, types.UnionType):
        return st.one_of([st.none() if a is type(None) else from_hint(a, big) for a in args])
    if dataclasses.is_dataclass(hint) or hint is Any:
        return junk()
    typed = {bool: st.booleans(), int: st.integers(-3, 40) | (st.sampled_from([2**31, 2**63, 10**30, 10**400]) if big else st.nothing()),
             float: st.floats(-1e3, 1e3) | st.sampled_from([0.0, 1e-300, 1e300, float("inf"), float("nan")]),
             str: WORDS | SAFE_TEXT}.get(hint)
    if typed is None and (origin in (list, tuple) or str(origin).endswith("Sequence")):
        typed = st.lists(from_hint(args[0] if args else Any, big), max_size=5)
    if typed is None:
        typed = st.dictionaries(st.text("abcxyz_", min_size=1, max_size=4), scalars(big), max_size=2)
    return st.one_of(typed, typed, typed, junk())  # a wrong type about one time in four


def signature_options(fn: Any, skip: tuple[str, ...], prefix: str) -> list[tuple[str, Any]]:
    """(dotted path, hint) of the keyword options a constructor takes (a free mapping's schema)."""
    types_ = typing.get_type_hints(fn, include_extras=True)
    return [(f"{prefix}.{n}", types_.get(n, Any)) for n, p in inspect.signature(fn).parameters.items()
            if n not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


SCHEMA = list(fields(RunConfig))
BENCHMARKS = {TOY: ToyBenchmark, SYNTHETIC: SyntheticBenchmark}


@st.composite
def assignments(draw: st.DrawFn, config: str, balancer: str) -> list[tuple[str, Any]]:
    """1-3 (dotted path, value) pairs: schema fields, the options of the chosen balancer and
    benchmark (from their signatures; small numbers, see the module docstring), unknown keys."""
    bench = BENCHMARKS[config]
    free = (signature_options(balancer_info(balancer).cls.__init__, ("self", "n_tasks"), "balancer.hparams")
            + signature_options(bench.build_model, ("self",), "model")
            + signature_options(bench.__init__, ("self", "variant"), "benchmark.options")
            + [(f"method_defaults.{balancer}", Any), ("train.nonsense", Any), ("balancer.hparams.nonsense", Any)])
    out = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            path, hint = draw(st.sampled_from(SCHEMA))
            out.append((path, draw(from_hint(hint, big=True))))
        else:
            path, hint = draw(st.sampled_from(free))
            out.append((path, draw(from_hint(hint, big=False))))
    return out


def as_set(path: str, value: Any, raw: bool) -> str:
    """``--set path=value``: the value as YAML, or (``raw``) as the bare text a user might type."""
    if raw and isinstance(value, str):
        return f"{path}={value}"
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return f"{path}={text.removesuffix('...' + chr(10)).strip()}"


def nested(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in pairs:
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            node[part] = child = child if isinstance(child, dict) else {}
            node = child
        node[leaf] = value
    return out


# ---------------------------------------------------------------------------------- harness
def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished run directory and a study storage (an Optuna journal) that nothing may change."""
    import optuna

    root = tmp_path_factory.mktemp("existing")
    assert main(["train", "--config", SYNTHETIC, "--scale", "tiny", "--out", str(root / "runs"), "--quiet",
                 "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2", "--set", "name=done"]) == 0
    journal = root / "study.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="other", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    (root / "afile").write_text("not a folder")
    return {"run": root / "runs" / "done", "journal": journal, "file": root / "afile"}


@pytest.fixture
def harness(existing: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Training capped, long commands stopped at their start, cwd in a scratch folder."""
    real_run = Trainer.run

    def capped_run(self: Trainer, resume: bool = False) -> dict[str, Any]:
        t = self.cfg.train
        self.cfg = dataclasses.replace(self.cfg, train=dataclasses.replace(
            t, epochs=min(t.epochs, 1), max_steps_per_epoch=min(t.max_steps_per_epoch or 2, 2)))
        return real_run(self, resume)

    def reached(*args: Any, **kwargs: Any) -> Any:
        raise Reached

    monkeypatch.setattr(Trainer, "run", capped_run)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    for module, name in (("experiments.studies.driver", "run_study"), ("experiments.cost", "bench"),
                         ("analysis.claims", "run_claims"), ("experiments.training.toy_runs", "run_toy")):
        monkeypatch.setattr(f"{module}.{name}", reached)
    monkeypatch.chdir(tmp_path)
    return {"existing": existing, "counter": itertools.count(), "tmp": tmp_path}


def writes_into(argv: list[str], run: Path) -> bool:
    """Whether the command line asks for output inside ``run``: ``--out`` at it (or below it), or
    ``extract-weights``, whose default output folder is the run directory."""
    outs = [Path(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a == "--out"]
    return "extract-weights" in argv or any(o == run or run in o.parents for o in outs)


def check(argv: list[str], harness: dict[str, Any]) -> None:
    """Run ``argv``; assert the properties (exit 0/2, one line on 2, no traceback, nothing changed)."""
    existing = harness["existing"]
    before, journal = snapshot(existing["run"]), existing["journal"].read_bytes()
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except Reached:
            code = 0
        except (UserError, OSError):
            if "--debug" not in argv:  # --debug asks for the traceback
                raise
            code = 2
    shown = shlex.join(argv)
    assert code in (0, 2), (shown, code, err.getvalue())
    if code == 2 and "--debug" not in argv:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("balancebench: error: "), (shown, err.getvalue())
    assert "Traceback" not in err.getvalue(), (shown, err.getvalue())
    after = snapshot(existing["run"])
    assert {k: after.get(k) for k in before} == before, f"{shown} changed or removed a file of the existing run"
    assert set(after) == set(before) or writes_into(argv, existing["run"]), f"{shown} wrote into the existing run"
    assert existing["journal"].read_bytes() == journal, f"{shown} changed the existing storage"


# ------------------------------------------------------------------------------ properties
@PROPERTY
@given(data=st.data(), config=st.sampled_from([SYNTHETIC, TOY]), balancer=st.sampled_from(list_balancers()),
       named=st.booleans(), delivery=st.sampled_from(["set", "raw", "file", "resume"]))
def test_random_config_values(harness: dict[str, Any], data: st.DataObject, config: str, balancer: str,
                              named: bool, delivery: str) -> None:
    pairs = data.draw(assignments(config, balancer))
    balancer = balancer if named else None  # None: the config's own balancer
    out = harness["tmp"] / f"runs{next(harness['counter'])}"
    if delivery == "resume":  # every value is a change to a finished run (or a runtime setting)
        argv = ["train", "--resume", str(harness["existing"]["run"])]
    elif delivery == "file":
        data = deep_merge(yaml.safe_load(Path(config).read_text()), nested(pairs))
        path = out.with_suffix(".yaml")
        path.write_text(yaml.safe_dump(data))
        argv = ["train", "--config", str(path), "--scale", "tiny", "--out", str(out), "--quiet"]
        pairs = []
    else:
        argv = ["train", "--config", config, "--scale", "tiny", "--out", str(out), "--quiet"]
    if balancer is not None:
        argv += ["--balancer", balancer]
    for path, value in pairs:
        argv += ["--set", as_set(path, value, raw=delivery == "raw")]
    check(argv, harness)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    _load_extra_parsers()
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


COMMANDS = _subparsers()


@st.composite
def command_lines(draw: st.DrawFn, paths: dict[str, Path]) -> list[str]:
    """A subcommand with a random subset of its options, each with a random (often wrong) value."""
    name = draw(st.sampled_from(sorted(COMMANDS)))
    special = st.sampled_from([str(paths["run"]), str(paths["run"].parent), str(paths["journal"]), str(paths["file"]),
                               str(paths["file"] / "below"), "/proc/nope", "/sys/kernel", "missing", SYNTHETIC, TOY,
                               "train.epochs=1", "balancer.hparams.gamma=abc"])
    numbers = st.integers(-3, 40).map(str) | st.sampled_from(["0", "-1", "1e9", "2.5", "nan", "abc", "99999999999"])
    argv = ["--debug"] if draw(st.integers(0, 9)) == 0 else []
    argv.append(name)
    for action in COMMANDS[name]._actions:
        if isinstance(action, argparse._HelpAction) or not draw(st.booleans()):
            continue
        flag = action.option_strings[-1] if action.option_strings else None
        if action.nargs == 0:
            argv.append(flag)
            continue
        pool = st.sampled_from(list(action.choices)) if action.choices else special | numbers | SAFE_TEXT
        count = draw(st.integers(1, 2)) if action.nargs in ("+", "*") else 1
        for _ in range(count):
            value = draw(pool | numbers | SAFE_TEXT)
            argv += [flag, value] if flag else [value]
    return argv


@PROPERTY
@given(data=st.data())
def test_random_command_lines(harness: dict[str, Any], data: st.DataObject) -> None:
    argv = data.draw(command_lines(harness["existing"]))
    check(argv, harness)
