"""Study workers share the parent's torch thread count (OMP_NUM_THREADS / torch.set_num_threads),
so two studies started with one thread each on a two-core machine do not oversubscribe it."""
from __future__ import annotations

import os

import pytest
import torch

from experiments.studies import driver


class _Recorder:
    """Stands in for the spawn context: records what each worker would be started with."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def Queue(self):  # noqa: N802 (multiprocessing's name)
        import queue

        return queue.Queue()

    def Process(self, target, args, name):  # noqa: N802
        recorder = self

        class _Proc:
            def start(self) -> None:
                recorder.threads.append(args[2])

            def join(self, timeout=None) -> None:
                return None

            exitcode = 0

        return _Proc()


@pytest.mark.parametrize("parent_threads, workers", [(1, 1), (2, 1), (2, 2), (1, 2)])
def test_workers_split_the_parents_thread_count(monkeypatch, parent_threads, workers):
    recorder = _Recorder()
    monkeypatch.setattr(driver.multiprocessing, "get_context", lambda method: recorder)
    before = torch.get_num_threads()
    torch.set_num_threads(parent_threads)
    try:
        driver._run_processes(plan=None, workers=workers, verbose=False)
    finally:
        torch.set_num_threads(before)
    expected = max(1, min(os.cpu_count() or 1, parent_threads) // workers)
    assert recorder.threads == [expected] * workers
