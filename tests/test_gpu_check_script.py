"""scripts/gpu_check.sh, checked on any CPU: its bash parses, every balancebench command line it
runs is accepted by the real parser, the files and config keys it names exist, and its time limits
add up to under 8 minutes. (Running it needs a CUDA GPU; docs/cost.md says what was measured.)"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from balancebench import main as cli
from experiments.config import load_run_config, parse_set

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
VARS = {"$OUT": "/tmp/out", '"$OUT/': '"/tmp/out/', '"$b"': "famo", "$b": "famo"}


def _lines() -> list[str]:
    return SCRIPT.read_text().splitlines()


def _expand(line: str) -> list[str]:
    for var, value in VARS.items():
        line = line.replace(var, value)
    line = line.split("||")[0]
    return shlex.split(line)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_syntax() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_every_balancebench_command_parses() -> None:
    cli._load_extra_parsers()
    parser = cli.build_parser()
    commands = []
    for line in _lines():
        words = _expand(line.strip()) if re.search(r"\bbb (bench|train)\b|-m balancebench\.main .", line) and "bb()" not in line else []
        if not words:
            continue
        start = words.index("bb") + 1 if "bb" in words else words.index("balancebench.main") + 1
        args = parser.parse_args(words[start:])
        commands.append(args.command)
        if args.command == "train":  # the config it names loads with its --set overrides
            cfg = load_run_config(ROOT / args.config, args.scale, parse_set(args.overrides))
            assert cfg.train.epochs >= 1
    assert commands.count("bench") == 1 and commands.count("train") >= 4


def test_named_tests_and_configs_exist() -> None:
    text = SCRIPT.read_text()
    for path in re.findall(r"(?:tests|configs)/[\w/]+\.(?:py|yaml)", text):
        assert (ROOT / path).is_file(), path


def test_time_limits_fit_eight_minutes() -> None:
    text = SCRIPT.read_text()
    loop = re.search(r"for b in ([\w ]+);", text).group(1).split()
    total = 0
    for line in _lines():
        m = re.match(r"\s*timeout (\d+) ", line)
        if m:
            total += int(m.group(1)) * (len(loop) if line.startswith("  ") else 1)
    assert 0 < total < 480, total
