"""Where a benchmark finds the user's own copy of a dataset, and the one-line errors when it cannot.

Nothing is downloaded: NYU-v2, CityScapes and CelebA are read from a directory the user points at,
``benchmark.options.root`` or else ``$BALANCEBENCH_DATA/<benchmark name>`` (one parent directory
holding ``nyuv2/``, ``cityscapes/``, ``celeba/``). Every problem with that copy (no root, a missing
folder or file, a file of the wrong shape) is a :class:`~experiments.errors.UserError` of one line
that names the expected layout and the first offending path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from experiments.errors import UserError

#: environment variable naming the parent directory of the benchmarks' data folders
DATA_ENV = "BALANCEBENCH_DATA"


class DataLayoutError(UserError):
    """The user's copy of a dataset is missing or does not have the expected layout."""


def resolve_root(benchmark: str, root: str | os.PathLike | None, layout: str) -> Path:
    """The data directory of ``benchmark``: ``root`` if given, else ``$BALANCEBENCH_DATA/<benchmark>``.

    ``layout`` describes the expected layout; it ends every error message.
    """
    if root is not None and str(root) != "":
        path = Path(root).expanduser()
        how = "benchmark.options.root"
    elif os.environ.get(DATA_ENV):
        path = Path(os.environ[DATA_ENV]).expanduser() / benchmark
        how = f"${DATA_ENV}/{benchmark}"
    else:
        raise DataLayoutError(
            f"{benchmark}: no data directory: set benchmark.options.root=DIR or ${DATA_ENV} (the parent of "
            f"{benchmark}/); nothing is downloaded (`balancebench fixture {benchmark} --out DIR` writes a tiny "
            f"test copy); expected layout: {layout}")
    if not path.is_dir():
        raise DataLayoutError(f"{benchmark}: data directory {path} (from {how}) does not exist; expected layout: {layout}")
    return path


def missing(benchmark: str, path: Path, layout: str) -> DataLayoutError:
    """The error for the first missing file or folder of a layout."""
    return DataLayoutError(f"{benchmark}: missing {path}; expected layout: {layout}")


def malformed(benchmark: str, path: Path, problem: str, layout: str) -> DataLayoutError:
    """The error for a file that exists but cannot be what the layout says it is."""
    return DataLayoutError(f"{benchmark}: malformed {path}: {problem}; expected layout: {layout}")


class OneLineErrors:
    """Wraps a ``DataLoader`` so that a layout error raised in a loader *worker* stays one line.

    torch re-raises a worker's exception with the worker's traceback in its message; this keeps the
    original message (the traceback's last line) and drops the rest.
    """

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator:
        try:
            yield from self.loader
        except DataLayoutError as exc:
            lines = str(exc).strip().splitlines()
            if len(lines) <= 1:
                raise
            tag = f"{DataLayoutError.__name__}: "
            last = lines[-1]
            raise DataLayoutError(last.split(tag, 1)[1] if tag in last else last) from None
