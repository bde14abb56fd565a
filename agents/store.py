"""The durable record log: SQLite in WAL mode, written *before* anything is published.

One row per record: seq (gapless), request id, digest, chain, encoded record bytes, time. A
commitment is published only after its transaction commits, so a crash at any point loses
nothing that was acknowledged, and a restart resumes the chain from the last durable row.

Retention purges the record *bodies* (by size and age) but keeps seq, digest and chain, so the
chain still resumes and an opening of a purged record answers `purged`, not `unknown`.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fpmon.chain import GENESIS, next_chain

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


class StoreError(Exception):
    """The log cannot take a write (disk full, read-only, corrupt): stop taking work."""


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
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {_describe(e)}") from None
        self.head_seq, self.head_chain = self._head()

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
            raise StoreError(_describe(e)) from None
        self.head_seq, self.head_chain = seq, chain
        return out

    def get(self, seq: int) -> tuple[str, bytes | None]:
        """("ok", bytes) exactly as committed, ("purged", None) or ("unknown", None)."""
        row = self.db.execute("SELECT data FROM records WHERE seq=?", (seq,)).fetchone()
        if row is None:
            return "unknown", None
        if row[0] is None:
            return "purged", None
        return "ok", bytes(row[0])

    def links(self, first: int, count: int) -> list[tuple[int, bytes, bytes, bytes | None]]:
        """(seq, digest, chain, body or None when purged) for `first` .. `first+count-1`."""
        rows = self.db.execute(
            "SELECT seq, digest, chain, data FROM records WHERE seq >= ? AND seq < ? ORDER BY seq",
            (first, first + count),
        ).fetchall()
        return [(s, bytes(d), bytes(c), None if b is None else bytes(b)) for s, d, c, b in rows]

    def head_of_disk(self) -> int:
        """The last durable seq as another connection sees it (readers do not cache it)."""
        return self._head()[0]

    def chain_at(self, seq: int) -> tuple[bytes, bytes] | None:
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
            raise StoreError(_describe(e)) from None
        return purged

    def stats(self) -> Stats:
        n, first = self.db.execute("SELECT COUNT(*), COALESCE(MIN(seq),0) FROM records").fetchone()
        kept, body, tokens = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size),0), COALESCE(SUM(tokens),0) FROM records "
            "WHERE data IS NOT NULL"
        ).fetchone()
        seq, chain = self._head()
        return Stats(n, kept, body, tokens, seq, chain, first)

    def verify_chain(self) -> int:
        """Recompute the chain from genesis; the first bad seq, or -1 (tests, fsck)."""
        chain, expect = GENESIS, 0
        for seq, digest, stored in self.db.execute(
            "SELECT seq, digest, chain FROM records ORDER BY seq"
        ):
            if seq != expect:
                return seq
            chain = next_chain(chain, bytes(digest))
            if chain != bytes(stored):
                return seq
            expect = seq + 1
        return -1

    def close(self) -> None:
        self.db.close()


def free_bytes(path: Path) -> int:
    p = Path(path)
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free
