"""The durable record log: SQLite in WAL mode, written *before* anything is published.

One row per record: seq (gapless), request id, digest, chain, encoded record bytes, time. A
commitment is published only after its transaction commits, so a crash at any point loses
nothing that was acknowledged, and a restart resumes the chain from the last durable row.

Retention purges the record *bodies* (by size and age) but keeps seq, digest and chain, so the
chain still resumes and an opening of a purged record answers `purged`, not `unknown`.

A disk can rot under an honest node. `verify()` (run at agent start) checks the file's
structure and the whole chain in one pass; `get()` re-hashes a body before it is served, so a
damaged record is reported as damaged instead of being revealed as if it were committed.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fpmon.canonical import digest as record_digest
from fpmon.chain import GENESIS, next_chain
from fpmon.errors import FpmonError

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    digest BLOB NOT NULL,
    chain BLOB NOT NULL,
    t REAL NOT NULL,
    size INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    data BLOB
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

MAX_SEQ = 2**63 - 1  # SQLite's INTEGER: a larger seq cannot be in the log (and would raise)
PUBLISHED_KEY = "published_head"


class StoreError(FpmonError):
    """The log cannot take a write or a read (disk full, read-only, corrupt)."""


class CorruptLog(StoreError):
    """The log on disk is damaged (structure or chain): the agent must not serve from it."""


def corrupt_message(path: Path, what: str) -> str:
    # One line an operator can act on; moving the log aside is honest but visible to verifiers.
    return (
        f"{path}: record log is damaged ({what}); the agent will not serve from it. Keep the "
        "file for inspection and restore it from a backup, or move it aside to start a new "
        "log (verifiers will then see this node's chain restart at seq 0)"
    )


@dataclass(frozen=True)
class Appended:
    seq: int
    digest: bytes
    chain: bytes


@dataclass(frozen=True)
class Stats:
    records: int
    stored: int  # records whose body is still kept
    body_bytes: int  # bytes of kept bodies
    tokens: int  # generated tokens of kept bodies
    head_seq: int
    head_chain: bytes
    first_seq: int

    @property
    def bytes_per_token(self) -> float:
        return self.body_bytes / self.tokens if self.tokens else 0.0


@dataclass(frozen=True)
class Verified:
    rows: int
    head_seq: int
    seconds: float


@dataclass(frozen=True)
class LoggedRow:
    seq: int
    digest: bytes
    chain: bytes
    t: float
    data: bytes | None  # None: purged by retention


def _is_damage(e: sqlite3.Error) -> bool:
    msg = str(e).lower()
    return any(w in msg for w in ("malformed", "not a database", "corrupt"))


def _describe(e: sqlite3.Error) -> str:
    msg = str(e)
    if "full" in msg:
        return f"record log is full ({msg}): free disk space or raise store.hard_max_bytes"
    if "readonly" in msg or "read-only" in msg:
        return f"record log is not writable ({msg}): fix permissions of the state directory"
    return f"record log write failed ({msg})"


class RecordLog:
    """One connection, one thread. The engine thread writes; readers open their own."""

    def __init__(
        self,
        path: Path,
        *,
        node: str,
        synchronous: str = "FULL",
        hard_max_bytes: int = 0,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.node = node
        try:
            if readonly:
                self.db = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
                )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Made in one thread, then handed to the one thread that uses it.
                self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute(f"PRAGMA synchronous={synchronous}")
                self.db.executescript(SCHEMA)
                if hard_max_bytes:
                    page = self.db.execute("PRAGMA page_size").fetchone()[0]
                    self.db.execute(f"PRAGMA max_page_count={max(hard_max_bytes // page, 16)}")
                self._check_node()
            self.head_seq, self.head_chain = self._head()
        except sqlite3.Error as e:
            raise self._error(e, prefix=True) from None

    def _error(self, e: sqlite3.Error, prefix: bool = False) -> StoreError:
        if _is_damage(e):
            return CorruptLog(corrupt_message(self.path, str(e)))
        return StoreError(f"{self.path}: {_describe(e)}" if prefix else _describe(e))

    def _check_node(self) -> None:
        # A log belongs to one node: continuing another node's chain would be a silent fork.
        row = self.db.execute("SELECT value FROM meta WHERE key='node'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('node', ?)", (self.node,))
        elif row[0] != self.node:
            raise StoreError(
                f"{self.path} holds node {row[0]!r}'s records, not {self.node!r}: "
                "use that node name or another state directory"
            )

    def _head(self) -> tuple[int, bytes]:
        row = self.db.execute("SELECT seq, chain FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), bytes(row[1])) if row else (-1, GENESIS)

    @property
    def next_seq(self) -> int:
        return self.head_seq + 1

    def append(self, items: Iterable[tuple[str, bytes, bytes, int]]) -> list[Appended]:
        """Append (request_id, digest, record bytes, tokens) in one transaction, gapless.

        The caller builds each record with `next_seq + i` already inside it; nothing is
        visible to anyone until the transaction commits (the durability point).
        """
        out: list[Appended] = []
        seq, chain = self.head_seq, self.head_chain
        now = time.time()
        rows = []
        for request_id, digest, data, tokens in items:
            seq += 1
            chain = next_chain(chain, digest)
            rows.append((seq, request_id, digest, chain, now, len(data), tokens, data))
            out.append(Appended(seq, digest, chain))
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?,?)", rows)
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:  # SQLite already rolled back on SQLITE_FULL
                    self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise self._error(e) from None
        self.head_seq, self.head_chain = seq, chain
        return out

    def get(self, seq: int) -> tuple[Literal["ok", "purged", "unknown", "corrupt"], bytes | None]:
        """("ok", bytes) exactly as committed, ("purged", None), ("unknown", None), or
        ("corrupt", None) when the stored body no longer hashes to its committed digest."""
        if not 0 <= seq <= MAX_SEQ:
            return "unknown", None  # not a row SQLite can hold; binding it would raise
        try:
            row = self.db.execute("SELECT digest, data FROM records WHERE seq=?", (seq,)).fetchone()
        except sqlite3.Error as e:
            raise self._error(e, prefix=True) from None
        if row is None:
            return "unknown", None
        if row[1] is None:
            return "purged", None
        data = bytes(row[1])
        # The committed digest is canonical.digest of exactly these bytes (worker._run).
        if record_digest(data) != bytes(row[0]):
            return "corrupt", None
        return "ok", data

    def rows(self, first: int, count: int) -> list[LoggedRow]:
        """The logged rows `first` .. `first+count-1` that exist, oldest first."""
        # Both ends within SQLite's INTEGER: first + count can pass 2^63 (a request near the top).
        last = min(first + count - 1, MAX_SEQ)
        return self._rows("seq BETWEEN ? AND ?", (max(first, 0), last))

    def head_of_disk(self) -> int:
        """The last durable seq as another connection sees it (readers do not cache it)."""
        try:
            return self._head()[0]
        except sqlite3.Error as e:
            raise self._error(e, prefix=True) from None

    def chain_at(self, seq: int) -> tuple[bytes, bytes] | None:
        if not 0 <= seq <= MAX_SEQ:
            return None
        row = self.db.execute("SELECT digest, chain FROM records WHERE seq=?", (seq,)).fetchone()
        return (bytes(row[0]), bytes(row[1])) if row else None

    def enforce_retention(self, max_bytes: int, max_age_s: float, now: float | None = None) -> int:
        """Purge the oldest bodies beyond `max_bytes` in total or older than `max_age_s`."""
        now = time.time() if now is None else now
        try:
            self.db.execute("BEGIN IMMEDIATE")
            cur = self.db.execute(
                "UPDATE records SET data=NULL WHERE data IS NOT NULL AND t < ?", (now - max_age_s,)
            )
            purged = cur.rowcount
            total = self.db.execute(
                "SELECT COALESCE(SUM(size),0) FROM records WHERE data IS NOT NULL"
            ).fetchone()[0]
            if total > max_bytes:
                # Walk oldest first until the kept bodies fit the budget.
                excess, cut = total - max_bytes, -1
                for seq, size in self.db.execute(
                    "SELECT seq, size FROM records WHERE data IS NOT NULL ORDER BY seq"
                ):
                    excess -= size
                    cut = seq
                    if excess <= 0:
                        break
                cur = self.db.execute(
                    "UPDATE records SET data=NULL WHERE data IS NOT NULL AND seq <= ?", (cut,)
                )
                purged += cur.rowcount
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise self._error(e) from None
        return purged

    def stats(self) -> Stats:
        try:
            n, first = self.db.execute(
                "SELECT COUNT(*), COALESCE(MIN(seq),0) FROM records"
            ).fetchone()
            kept, body, tokens = self.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size),0), COALESCE(SUM(tokens),0) FROM records "
                "WHERE data IS NOT NULL"
            ).fetchone()
            seq, chain = self._head()
        except sqlite3.Error as e:
            raise self._error(e, prefix=True) from None
        return Stats(n, kept, body, tokens, seq, chain, first)

    # -- integrity -----------------------------------------------------------------------------

    def first_break(self) -> tuple[int, str] | None:
        """(seq, what) of the first gap or bad link from genesis, or None: one scan, no
        per-row query (~0.12 s per 100k rows here)."""
        chain, expect = GENESIS, 0
        for seq, digest, stored in self.db.execute(
            "SELECT seq, digest, chain FROM records ORDER BY seq"
        ):
            if seq != expect:
                return expect, f"seq {expect} missing: the log jumps to seq {seq}"
            chain = next_chain(chain, digest)
            if chain != stored:
                return seq, f"chain at seq {seq} is not H(chain[{seq - 1}] || digest[{seq}])"
            expect = seq + 1
        return None

    def verify_chain(self) -> int:
        """The first bad seq, or -1 (tests, fsck)."""
        brk = self.first_break()
        return -1 if brk is None else brk[0]

    def verify(self) -> Verified:
        """The file's structure (PRAGMA quick_check) and the whole chain, or CorruptLog."""
        t0 = time.perf_counter()
        try:
            problems = [r[0] for r in self.db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise CorruptLog(corrupt_message(self.path, "; ".join(problems)[:300]))
            brk = self.first_break()
            if brk is not None:
                raise CorruptLog(corrupt_message(self.path, brk[1]))
            rows = int(self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0])
            head = self._head()[0]
        except sqlite3.Error as e:
            raise self._error(e, prefix=True) from None
        return Verified(rows, head, time.perf_counter() - t0)

    # -- what was published ------------------------------------------------------------------

    def published_head(self) -> int | None:
        """The seq of the last signed head this node published, None if never recorded."""
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (PUBLISHED_KEY,)).fetchone()
        return int(row[0]) if row else None

    def mark_published(self, seq: int) -> None:
        try:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (PUBLISHED_KEY, str(seq)))
        except sqlite3.Error as e:
            raise self._error(e) from None

    def rows_after(self, seq: int, limit: int) -> list[LoggedRow]:
        """The logged rows after `seq`, at most the last `limit` of them, oldest first."""
        return self._rows("seq > ?", (max(seq, self.head_of_disk() - limit),))

    def _rows(self, where: str, args: tuple[int, ...]) -> list[LoggedRow]:
        try:
            rows = self.db.execute(
                f"SELECT seq, digest, chain, t, data FROM records WHERE {where} ORDER BY seq", args
            ).fetchall()
        except sqlite3.Error as e:
            raise self._error(e, prefix=True) from None
        return [
            LoggedRow(s, bytes(d), bytes(c), float(t), None if b is None else bytes(b))
            for s, d, c, t, b in rows
        ]

    def close(self) -> None:
        self.db.close()


def free_bytes(path: Path) -> int:
    p = Path(path)
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free
