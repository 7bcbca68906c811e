"""Plug-ins by dotted path through the command line: a working one trains, is listed with its origin
and passes ``check-balancer``; a broken one (import error, missing attribute, wrong base class, no
registry metadata, a constructor that raises, an abstract benchmark) is one line naming it, exit 2;
a balancer that breaks the contract makes ``check-balancer`` exit 1 with the broken rule named.

Each test writes its plug-in module under a fresh name, and the registry is restored afterwards, so
no plug-in leaks into other tests' ``list_balancers()``.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from balancebench.main import main
from balancers import registry
from experiments.config import load_run_config
from experiments.errors import ConfigError
from tests.balancebench.test_bad_inputs import SYNTHETIC, assert_one_line, run_cli

_COUNTER = itertools.count()

BALANCER = """
import torch
from balancers import Balancer, register

@register(description="half the sum of the losses", paper="none (a test plug-in)")
class Half(Balancer):
    weights_sum_to_one = False

    def combine(self, losses, closure):
        self._record(torch.full_like(losses, 0.5))
        return 0.5 * losses.sum()
"""


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    saved = (dict(registry._REGISTRY), dict(registry._ORIGINS), dict(registry._ALIASES))
    yield
    for live, before in zip((registry._REGISTRY, registry._ORIGINS, registry._ALIASES), saved):
        live.clear()
        live.update(before)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """``plugin(source)``: a fresh importable module holding ``source``; returns its name."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))

    def write(source: str) -> str:
        name = f"bb_test_plugin_{next(_COUNTER)}_{id(folder)}"
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


def test_a_dotted_path_balancer_trains_and_is_listed(plugin, tmp_path: Path, capsys) -> None:
    module = plugin(BALANCER)
    code = main(["train", "--config", SYNTHETIC, "--scale", "tiny", "--out", str(tmp_path / "runs"), "--quiet",
                 "--balancer", f"{module}:Half", "--set", "train.epochs=1"])
    assert code == 0, capsys.readouterr().err
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert (run_dir / "summary.json").is_file()
    assert f'"balancer": "{module}:Half"' in (run_dir / "summary.json").read_text()  # str(): its dotted path
    assert main(["list", f"{module}:Half"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if f"{module}:Half" in line)
    assert "[dotted path]" in row and "half the sum" in row


def test_check_balancer_passes_a_correct_plugin(plugin, capsys) -> None:
    module = plugin(BALANCER)
    assert main(["check-balancer", f"{module}:Half"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "0 fail" in out.splitlines()[-1]


def test_check_balancer_names_the_broken_rule(plugin, capsys) -> None:
    """A balancer with memory that declares itself stateless fails exactly the rule about that."""
    module = plugin(BALANCER.replace("class Half(Balancer):", "class Half(Balancer):\n    calls = 0")
                    .replace("        self._record(", "        self.calls += 1\n        losses = losses * (1 + min(self.calls, 3))\n        self._record(")
                    .replace("torch.full_like(losses, 0.5)", "torch.full_like(losses, 0.5 * (1 + min(self.calls, 3)))"))
    assert main(["check-balancer", f"{module}:Half"]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if "| FAIL" in line]
    assert any("stateful metadata is truthful" in line for line in failed), out
    assert not any("bad losses" in line for line in failed), out


@pytest.mark.parametrize("source, reference, needles", [
    ("import no_such_dependency_xyz\n", "{m}:Half", ["cannot import module", "no_such_dependency_xyz"]),
    ("x = 1\n", "{m}:Half", ["has no attribute 'Half'"]),
    ("class Half:\n    pass\n", "{m}:Half", ["does not derive from balancers.base.Balancer"]),
    (BALANCER.replace('@register(description="half the sum of the losses", paper="none (a test plug-in)")\n', ""),
     "{m}:Half", ["has no registry metadata", "@balancers.register"]),
    (BALANCER.replace("weights_sum_to_one = False", "def __init__(self, n_tasks):\n        raise RuntimeError('boom')"),
     "{m}:Half", ["constructor raised RuntimeError: boom"]),
    ("", "not a name", ["unknown balancer 'not a name'"]),
])
def test_a_broken_balancer_plugin_is_one_line(plugin, tmp_path: Path, capsys, source: str, reference: str,
                                              needles: list[str]) -> None:
    name = reference.format(m=plugin(source))
    args = ["train", "--config", SYNTHETIC, "--scale", "tiny", "--out", str(tmp_path), "--quiet", "--balancer", name]
    assert_one_line(*run_cli(args, capsys), name, *needles)
    code, err = run_cli(["check-balancer", name], capsys)
    assert code == 2
    assert_one_line(code, err, name, *needles)


BENCHMARK = """
from experiments.benchmarks.synthetic import SyntheticBenchmark

class Mine(SyntheticBenchmark):
    '''A synthetic benchmark under another name.'''
"""


@pytest.mark.parametrize("source, needles", [
    ("raise ImportError('needs a package this machine lacks')\n", ["cannot import module", "lacks"]),
    ("import torch\nclass Mine(torch.nn.Module):\n    pass\n", ["does not derive from experiments.benchmarks.base.Benchmark"]),
    ("from experiments.benchmarks import Benchmark\nclass Mine(Benchmark):\n    pass\n",
     ["does not implement", "losses", "task_names"]),
    (BENCHMARK + "    def __init__(self, variant=None, **options):\n        raise KeyError('nope')\n",
     ["constructor raised KeyError"]),
])
def test_a_broken_benchmark_plugin_is_one_line(plugin, tmp_path: Path, capsys, source: str, needles: list[str]) -> None:
    name = f"{plugin(source)}:Mine"
    args = ["train", "--config", SYNTHETIC, "--scale", "tiny", "--out", str(tmp_path), "--quiet",
            "--set", f"benchmark.name={name}"]
    assert_one_line(*run_cli(args, capsys), name, *needles)


def test_a_dotted_path_benchmark_trains_and_names_itself_by_its_path(plugin, tmp_path: Path, capsys) -> None:
    name = f"{plugin(BENCHMARK)}:Mine"
    code = main(["train", "--config", SYNTHETIC, "--scale", "tiny", "--out", str(tmp_path), "--quiet",
                 "--set", f"benchmark.name={name}", "--set", "train.epochs=1"])
    assert code == 0, capsys.readouterr().err
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert f'"benchmark": "{name}"' in (run_dir / "summary.json").read_text()


def test_the_config_schema_resolves_names_where_they_are_read(plugin) -> None:
    """A run config naming a broken plug-in fails when it is loaded, naming the config path."""
    name = f"{plugin('x = 1')}:Nothing"
    with pytest.raises(ConfigError, match=rf"^balancer\.name: .*{name}.*no attribute"):
        load_run_config(None, None, {"balancer": {"name": name}})
    with pytest.raises(ConfigError, match=rf"^benchmark\.name: .*{name}"):
        load_run_config(None, None, {"benchmark": {"name": name}})


def test_a_study_takes_a_dotted_path_method(plugin) -> None:
    from experiments.studies.config import split_methods
    from experiments.errors import UserError

    name = f"{plugin(BALANCER)}:Half"
    assert split_methods(["uniform", name, f"fixed_from_{name}"]) == (["uniform", name], {f"fixed_from_{name}": name})
    with pytest.raises(UserError, match="cannot import module"):
        split_methods(["no_such_module_xyz.sub:Half"])


def test_entry_points_are_listed_with_their_distribution_and_checked(plugin, monkeypatch, capsys) -> None:
    """Installed entry points (here: the discovery function's answer replaced) are found by name,
    listed with their distribution, a broken one listed as unavailable with its reason, and one
    whose class is registered under another name refused."""
    from balancers import balancer_info, plugins

    good = plugin(BALANCER.replace("@register(description=", '@register("half_ep", description='))
    misnamed = plugin(BALANCER.replace("@register(description=", '@register("other_name", description='))
    broken = plugin("import no_such_dependency_xyz\n")
    bench = plugin(BENCHMARK)
    advertised = {
        plugins.BALANCER_GROUP: (plugins.EntryPoint("half_ep", f"{good}:Half", "half-dist 1.0"),
                                 plugins.EntryPoint("broken_ep", f"{broken}:Half", "broken-dist 2.0"),
                                 plugins.EntryPoint("misnamed_ep", f"{misnamed}:Half", "misnamed-dist 3.0")),
        plugins.BENCHMARK_GROUP: (plugins.EntryPoint("mine_ep", f"{bench}:Mine", "bench-dist 0.1"),),
    }
    monkeypatch.setattr(plugins, "entry_points", lambda group: advertised.get(group, ()))
    assert main(["list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert "[entry point (half-dist 1.0)] half the sum" in rows["half_ep"]
    assert "[entry point (broken-dist 2.0)] unavailable:" in rows["broken_ep"] and "no_such_dependency_xyz" in rows["broken_ep"]
    assert "registered as 'other_name'" in rows["misnamed_ep"]
    assert "variants: default" in rows["mine_ep"] and "[entry point (bench-dist 0.1)]" in rows["mine_ep"]
    assert balancer_info("half_ep").cls.__module__ == good
    with pytest.raises(ValueError, match="broken_ep.*cannot import module"):
        balancer_info("broken_ep")
    assert main(["check-balancer", "half_ep"]) == 0
