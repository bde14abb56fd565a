"""The verdict store (SQLite, WAL): verdicts, alerts, pending openings and replays, chain state.

Idempotent: a verdict is keyed by (node, seq) and an alert by its id, so work redone after a
restart never writes twice; a verdict and the removal of its pending row are one transaction,
so a crash leaves either both or neither. Only the daemon's main thread touches it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from fpmon import canonical
from fpmon.wire import Alert, Commit, Verdict

SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    node TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL, t REAL NOT NULL,
    sid INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (node, seq));
CREATE INDEX IF NOT EXISTS verdicts_t ON verdicts (t);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY, node TEXT NOT NULL, kind TEXT NOT NULL, t REAL NOT NULL,
    sid INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    node TEXT NOT NULL, seq INTEGER NOT NULL, stage TEXT NOT NULL, t REAL NOT NULL,
    commit_msg BLOB NOT NULL, record BLOB, PRIMARY KEY (node, seq));
CREATE TABLE IF NOT EXISTS chains (
    node TEXT PRIMARY KEY, seq INTEGER NOT NULL, chain BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters (
    node TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (node, name));
"""


def _json(m: dict[str, Any]) -> str:
    # Verdict evidence holds no bytes; alerts' details are maps of plain values. The only bytes
    # are `sig`, stored as hex and given back as bytes by `_body`.
    return json.dumps(m, separators=(",", ":"), default=lambda b: b.hex())


def _body(text: str) -> dict[str, Any]:
    """A stored verdict/alert map as it was signed (the signature covers every field)."""
    m = json.loads(text)
    if isinstance(m.get("sig"), str):
        m["sig"] = bytes.fromhex(m["sig"])
    return dict(m)


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        row = self.db.execute(
            "SELECT max(s) FROM (SELECT max(sid) s FROM verdicts UNION ALL "
            "SELECT max(sid) FROM alerts)"
        ).fetchone()
        self.sid = int(row[0] or 0)  # stream sequence of the last verdict/alert stored

    def close(self) -> None:
        self.db.close()

    # --- verdicts and alerts -------------------------------------------------------------
    def add_verdict(self, v: Verdict) -> bool:
        """Store `v` and clear its pending row; False when (node, seq) already has one."""
        with self.db:
            self.db.execute("BEGIN")
            cur = self.db.execute(
                "INSERT OR IGNORE INTO verdicts VALUES (?,?,?,?,?,?)",
                (v.node, v.seq, v.status, v.t, self.sid + 1, _json(v.to_map())),
            )
            self.db.execute("DELETE FROM pending WHERE node=? AND seq=?", (v.node, v.seq))
        if cur.rowcount == 1:
            self.sid += 1
            return True
        return False

    def add_alert(self, a: Alert) -> bool:
        cur = self.db.execute(
            "INSERT OR IGNORE INTO alerts VALUES (?,?,?,?,?,?)",
            (a.id, a.node, a.kind, a.t, self.sid + 1, _json(a.to_map())),
        )
        if cur.rowcount == 1:
            self.sid += 1
            return True
        return False

    def verdicts(
        self, since_t: float = 0.0, node: str | None = None, since_sid: int = 0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        q = "SELECT body FROM verdicts WHERE t >= ? AND sid > ?"
        args: list[Any] = [since_t, since_sid]
        if node:
            q += " AND node = ?"
            args.append(node)
        q += " ORDER BY sid DESC LIMIT ?"
        args.append(limit)
        return [_body(r[0]) for r in reversed(self.db.execute(q, args).fetchall())]

    def alerts(self, since_sid: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT body FROM alerts WHERE sid > ? ORDER BY sid DESC LIMIT ?", (since_sid, limit)
        ).fetchall()
        return [_body(r[0]) for r in reversed(rows)]

    def verdict_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for node, status, n in self.db.execute(
            "SELECT node, status, count(*) FROM verdicts GROUP BY node, status"
        ):
            out.setdefault(node, {})[status] = n
        return out

    def last_verdict_t(self) -> dict[str, float]:
        return dict(self.db.execute("SELECT node, max(t) FROM verdicts GROUP BY node").fetchall())

    # --- pending work --------------------------------------------------------------------
    def add_pending(self, commits: list[Commit]) -> None:
        if not commits:
            return
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR IGNORE INTO pending VALUES (?,?,?,?,?,NULL)",
                [(c.node, c.seq, "open", now, canonical.pack(c.to_map())) for c in commits],
            )

    def set_opened(self, node: str, seq: int, record: bytes) -> None:
        self.db.execute(
            "UPDATE pending SET stage='replay', record=? WHERE node=? AND seq=?",
            (record, node, seq),
        )

    def drop_pending(self, node: str, seq: int) -> None:
        self.db.execute("DELETE FROM pending WHERE node=? AND seq=?", (node, seq))

    def pending(self) -> list[tuple[Commit, str, bytes | None]]:
        import msgpack

        out = []
        for stage, blob, record in self.db.execute(
            "SELECT stage, commit_msg, record FROM pending ORDER BY t"
        ):
            out.append((Commit.from_map(msgpack.unpackb(blob, raw=False)), stage, record))
        return out

    # --- chain state and counters --------------------------------------------------------
    def save_chains(self, heads: dict[str, tuple[int, bytes]]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO chains VALUES (?,?,?)",
                [(n, s, c) for n, (s, c) in heads.items()],
            )

    def chains(self) -> dict[str, tuple[int, bytes]]:
        return {n: (s, c) for n, s, c in self.db.execute("SELECT node, seq, chain FROM chains")}

    def save_counters(self, counters: dict[str, dict[str, int]]) -> None:
        rows = [(n, k, v) for n, m in counters.items() for k, v in m.items()]
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO counters VALUES (?,?,?)", rows)

    def counters(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for n, k, v in self.db.execute("SELECT node, name, value FROM counters"):
            out.setdefault(n, {})[k] = v
        return out
