"""The default study storage, an Optuna journal file, read and appended so that damage is never silent.

Optuna's ``JournalFileBackend`` writes one JSON record per line. A crash or a full disk during a
write leaves a *torn* last line (no line end). Optuna's reader skips it, but the next append
lands after it, so the torn bytes and the new record become one invalid line in the middle of the
file and, from then on, every read fails: the whole study is lost. Other damage (a bad line in the
middle, garbage appended, invalid UTF-8, a JSON line that is not a journal record) gave a
``JSONDecodeError`` / ``UnicodeDecodeError`` / ``KeyError`` traceback, or was skipped silently when
it was the last line.

Here:

* every complete line is checked when read; the first bad one is a one-line
  :class:`JournalDamaged` naming the file, the line number and how to continue;
* before every append (under Optuna's own journal lock) and when a study opens the journal for
  writing, a torn last line is repaired: a copy of the original bytes is kept next to the journal
  (``study.journal.torn-<time>``), and the torn line is removed - or, when it is a complete record
  that only lacks its line end, the line end is added (a repair never drops a complete record, and
  every record before the torn line is kept, so no finished trial is lost). One line says so;
* readers that do not write (``results``, ``report``) leave the file untouched and say in one line
  that its last line is incomplete (it may also be a write in progress).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import get_lock_file
from optuna.storages.journal._storage import JournalOperation

from experiments.errors import UserError

_OP_CODES = frozenset(int(op) for op in JournalOperation)


class JournalDamaged(UserError):
    """A complete line of a journal file that is not a journal record Optuna can apply."""

    def __init__(self, path: str, line: int, why: str) -> None:
        self.path, self.line, self.why = path, line, why
        intact = (f"lines 1-{line - 1} before it are intact (to continue from them, keep a copy of the file "
                  f"and put its first {line - 1} lines in its place: head -n {line - 1})"
                  if line > 1 else "no line before it")
        super().__init__(f"study journal {path} is damaged at line {line}: {why}; {intact}")


def parse_record(raw: bytes, path: str, line: int) -> dict[str, Any]:
    """One journal line (with or without its line end) as a record, or :class:`JournalDamaged`."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise JournalDamaged(path, line, f"invalid UTF-8 (byte {exc.start + 1} of the line)") from None
    except json.JSONDecodeError as exc:
        raise JournalDamaged(path, line, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
    op = record.get("op_code") if isinstance(record, dict) else None
    if type(op) is not int or op not in _OP_CODES or not isinstance(record.get("worker_id"), str):
        raise JournalDamaged(path, line, "valid JSON but not an Optuna journal record")
    return record


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class CheckedJournalBackend(JournalFileBackend):
    """``JournalFileBackend`` whose reader checks every line and whose writer repairs a torn tail."""

    def __init__(self, file_path: str, say: Callable[[str], None] = _say) -> None:
        super().__init__(file_path)
        self.say = say
        #: (log number, byte offset where that record starts) after the last read: the storage asks
        #: for ever later numbers, so the next read starts there instead of at the top
        self._resume = (0, 0)
        #: the last record handed to the storage and its line number (to name a record that fails to apply)
        self.last_record: dict[str, Any] | None = None
        self.last_line = 0

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        self.last_record = None
        number, offset = self._resume if self._resume[0] <= log_number_from else (0, 0)
        try:
            with open(self._file_path, "rb") as handle:
                handle.seek(offset)
                for raw in handle:
                    if not raw.endswith(b"\n"):
                        return  # a write in progress, or a torn tail (repaired before the next append)
                    record = parse_record(raw, self._file_path, number + 1)
                    number, offset = number + 1, offset + len(raw)
                    if number > log_number_from:
                        self.last_record, self.last_line = record, number
                        yield record
        finally:
            self._resume = (number, offset)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8")
        with get_lock_file(self._lock):
            self._repair_tail()
            with open(self._file_path, "ab") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())

    def repair(self) -> None:
        """Repair a torn last line now (under the journal lock)."""
        with get_lock_file(self._lock):
            self._repair_tail()

    def _repair_tail(self) -> None:
        """Call with the journal lock held: no write is in progress, so a missing line end is a tear."""
        path = self._file_path
        with open(path, "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            handle.seek(0)
            head = handle.read()
            start = head.rfind(b"\n") + 1
            line = head.count(b"\n", 0, start) + 1
            torn = head[start:]
            backup = _backup(path)
            try:
                parse_record(torn, path, line)
                complete = True
            except JournalDamaged:
                complete = False
            if complete:
                handle.seek(size)
                handle.write(b"\n")
            else:
                handle.truncate(start)
            handle.flush()
            os.fsync(handle.fileno())
        if complete:
            self.say(f"balancebench: repaired study journal {path}: its last record (line {line}) lacked its line "
                     f"end, which is added; the original is kept at {backup}")
        else:
            self.say(f"balancebench: repaired study journal {path}: its last line {line} was cut by an interrupted "
                     f"write ({len(torn)} bytes, not a complete record) and is removed; every record before it is "
                     f"kept; the original is kept at {backup}")


def _backup(path: str) -> str:
    """A copy of the journal's bytes as they are now, next to it, under a name not yet taken."""
    stem = f"{path}.torn-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while True:
        target = stem if n == 1 else f"{stem}-{n}"
        try:
            with open(path, "rb") as src, open(target, "xb") as dst:
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            return target
        except FileExistsError:
            n += 1


class CheckedJournalStorage(JournalStorage):
    """``JournalStorage`` that names the line of a record Optuna cannot apply (e.g. a ``KeyError``
    for a record with missing fields) instead of failing with a traceback."""

    def _sync_with_backend(self) -> None:
        backend = self._backend
        try:
            super()._sync_with_backend()
        except JournalDamaged:
            raise
        except Exception as exc:
            record = getattr(backend, "last_record", None)
            if not isinstance(backend, CheckedJournalBackend) or record is None \
                    or record["worker_id"].startswith(self._worker_id_prefix):
                raise  # Optuna's answer to this process's own write (e.g. DuplicatedStudyError)
            raise JournalDamaged(backend._file_path, backend.last_line,
                                 f"a record Optuna cannot apply ({type(exc).__name__}: {exc})") from None


def torn_tail(path: str | Path) -> bool:
    """Whether the file's last byte is not a line end (a torn record, or a write in progress)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return False
            handle.seek(size - 1)
            return handle.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _has_complete_line(path: str | Path) -> bool:
    """Whether the file holds at least one line end (a journal's records each end with one)."""
    with open(path, "rb") as handle:
        return any(b"\n" in chunk for chunk in iter(lambda: handle.read(1 << 20), b""))


def open_journal(path: str | Path, *, writer: bool) -> JournalStorage:
    """A journal storage at ``path``; a ``writer`` repairs a torn last line now, a reader says it
    is ignored. Damage anywhere else is a one-line :class:`JournalDamaged`."""
    if torn_tail(path) and not _has_complete_line(path):  # e.g. a text file given as --storage
        raise UserError(f"{path} is not a balancebench journal (not one complete record); "
                        "give the study's journal file, or a new path")
    backend = CheckedJournalBackend(str(path))
    if writer:
        backend.repair()
    elif torn_tail(path):
        _say(f"balancebench: warning: the last line of {path} is incomplete (a write in progress, or cut by a "
             "crash) and is ignored; the next `balancebench study` on this journal repairs it")
    return CheckedJournalStorage(backend)
