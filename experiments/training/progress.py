"""Progress bars (tqdm) that can be silenced for studies and CI."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


class _Silent:
    enabled = False

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar writing to stderr, or a no-op object with the same methods when disabled."""
    if not enabled:
        return _Silent()
    bar = tqdm(total=total, file=sys.stderr, dynamic_ncols=True, mininterval=0.5, **kwargs)
    bar.enabled = True
    return bar
