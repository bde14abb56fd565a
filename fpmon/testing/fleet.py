"""A prover fleet built from fpmon's core, for the daemon's tests, benches and drills.

Each `ProverNode` does what an agent does for one request — runs a real engine, builds the
record with `fpmon.capture`, chains its digest, signs heads with Ed25519, publishes `commit` and
`head` on a real PUB socket and answers openings on a real ROUTER — and can be told to lie in
the ways the adversarial battery needs (declare one setup and run another, tamper with an
opening, drop or reorder commits, stay silent). It is not the agent (issue 4): it exists so the
verifier can be proven against real numerics and real sockets on its own.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import zmq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fpmon import manifest
from fpmon.capture import record_from_row
from fpmon.chain import GENESIS, next_chain, sign_head
from fpmon.engines.base import BatchRequest, ProbeSpec, default_layers
from fpmon.engines.batching import build_rows
from fpmon.manifest import token_request
from fpmon.records import Record
from fpmon.wire import (
    Commit,
    GpuSample,
    Head,
    HostSample,
    Link,
    LinksReply,
    LinksRequest,
    OpenReply,
    OpenRequest,
    Telemetry,
    Verdict,
    WireError,
    decode,
    encode,
)
from fpmon.wire.messages import OpenStatus


class ProverNode:
    def __init__(
        self,
        name: str,
        ctx: zmq.Context[Any] | None = None,
        hub_xsub: str = "",
        hub_curve: tuple[str, bytes, bytes] | None = None,
    ) -> None:
        """`hub_curve`: (hub's Z85 server key, our public, our secret) for a Curve hub."""
        self.name = name
        self.ctx = ctx or zmq.Context.instance()
        self.key = Ed25519PrivateKey.generate()
        self.pubkey = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.linger = 0
        if hub_xsub:  # a large fleet: publish through the hub's XSUB
            if hub_curve:
                from fpmon.transport import curve_client

                curve_client(self.pub, *hub_curve)
            self.pub.connect(hub_xsub)
            self.publish_endpoint = ""
        else:
            self.pub.bind("tcp://127.0.0.1:*")
            self.publish_endpoint = self.pub.last_endpoint.decode()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.bind("tcp://127.0.0.1:*")
        self.openings_endpoint = self.router.last_endpoint.decode()
        self.records: dict[int, bytes] = {}
        self.commits: dict[int, Commit] = {}  # its log, for links (gap repair)
        self.seq = 0
        self.chain = GENESIS
        self.silent = False  # never answer openings
        self.tamper = False  # answer with other bytes than committed
        self.purge = False  # answer `purged` (records "removed by retention")
        self.delay_s = 0.0  # answer this late (a slow disk or link), once per record
        self._late: dict[int, tuple[float, list[bytes]]] = {}  # seq -> (when, frames)
        self.opened: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve_openings, daemon=True)
        self._thread.start()

    # --- prover ---------------------------------------------------------------------------
    def make(
        self,
        engine: Any,
        prompt_ids: list[int],
        *,
        decode_steps: int = 8,
        batch_size: int = 1,
        slot: int = 0,
        declare: dict[str, Any] | None = None,
        model: str | None = None,
    ) -> Commit:
        """Serve one request on `engine` (what actually runs) and commit to its record.

        `declare` overrides setup fields in the record (a lie, told consistently: a declared
        batch size also rewrites the schedule's shape); `model` renames the model.
        """
        probes = ProbeSpec(tuple(default_layers(engine.num_layers)))
        rows = build_rows(prompt_ids, batch_size, slot, engine.vocab_limit)
        t0 = time.time()
        res = engine.run_batch(BatchRequest(rows, decode_steps, [slot], probes))
        rec = record_from_row(
            engine,
            res,
            slot,
            prompt_ids,
            probes,
            node=self.name,
            seq=self.seq,
            request_id=f"{self.name}-{self.seq}",
            t_start=t0,
            t_end=time.time(),
        )
        if declare:
            setup = rec.setup.replace(**declare)
            sched = dict(rec.schedule)
            sched["row_lengths"] = [len(prompt_ids)] * setup.batch_size
            rec = dataclasses.replace(rec, setup=setup, schedule=sched)
            if "dtype" in declare:  # as an agent hiding its dtype does: probes in the declared
                from fpmon.replay.attribution import cast_probes

                rec = cast_probes(rec, dict.fromkeys(rec.probes, setup.dtype))
        if model:
            rec = dataclasses.replace(rec, model=model)
        # The row manifest of the batch as declared (a lie told consistently): its request in
        # its slot, every other row a filler (an honest batch of several requests: make_batch).
        rid = f"{self.name}-{self.seq}"
        req = token_request(rid, prompt_ids, len(rec.output_ids))
        listed = manifest.batch([(rid, req)], rec.setup.batch_size, [rec.setup.slot])
        return self.commit(dataclasses.replace(rec, manifest=listed, request=req))

    def make_batch(
        self, engine: Any, prompts: list[list[int]], *, decode_steps: int = 8
    ) -> list[Commit]:
        """Serve a batch of requests, one per row, as an agent does: one record and one
        commitment per row, every record carrying the manifest of all of them."""
        probes = ProbeSpec(tuple(default_layers(engine.num_layers)))
        rows = [list(p) for p in prompts]
        t0 = time.time()
        res = engine.run_batch(BatchRequest(rows, decode_steps, list(range(len(rows))), probes))
        rids = [f"{self.name}-{self.seq + i}" for i in range(len(rows))]
        reqs = [token_request(r, p, decode_steps + 1) for r, p in zip(rids, rows, strict=True)]
        listed = manifest.batch(list(zip(rids, reqs, strict=True)), len(rows))
        out = []
        for i, ids in enumerate(rows):
            rec = record_from_row(
                engine,
                res,
                i,
                ids,
                probes,
                node=self.name,
                seq=self.seq,
                request_id=rids[i],
                t_start=t0,
                t_end=time.time(),
            )
            out.append(self.commit(dataclasses.replace(rec, manifest=listed, request=reqs[i])))
        return out

    def commit(self, rec: Record) -> Commit:
        rec = rec.with_identity(self.name, self.seq, f"{self.name}-{self.seq}")
        data = rec.encode()
        digest = rec.digest()
        self.chain = next_chain(self.chain, digest)
        self.records[self.seq] = data
        c = Commit(
            node=self.name,
            t=time.time(),
            seq=self.seq,
            request_id=rec.request_id,
            record_digest=digest,
            chain=self.chain,
            setup=rec.setup.to_map(),
            model=rec.model,
            prompt_tokens=len(rec.prompt_ids),
            output_tokens=len(rec.output_ids),
            prefill_s=rec.timings.get("prefill_s", 0.0),
            decode_s=rec.timings.get("decode_s", 0.0),
            manifest=manifest.root(rec.manifest),
        )
        self.commits[self.seq] = c
        self.seq += 1
        return c

    def head_for(self, c: Commit) -> Head:
        return Head(
            node=self.name,
            t=time.time(),
            seq=c.seq,
            chain=c.chain,
            sig=sign_head(self.key, self.name, c.seq, c.chain),
            pubkey=self.pubkey,
        )

    def publish(self, c: Commit, head: bool = True) -> None:
        self.pub.send_multipart(encode(c))
        if head:
            self.pub.send_multipart(encode(self.head_for(c)))

    def telemetry(self, gpus: list[GpuSample] | None = None) -> None:
        self.pub.send_multipart(
            encode(
                Telemetry(
                    node=self.name,
                    t=time.time(),
                    gpus=gpus or [],
                    host=HostSample(cpus=2),
                    source="host",
                )
            )
        )

    # --- openings -------------------------------------------------------------------------
    def _serve_openings(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        while not self._stop.is_set():
            self._send_due()
            if not poller.poll(20):
                continue
            frames = self.router.recv_multipart()
            ident, rest = frames[0], frames[1:]
            try:
                req = decode(rest, expect=("open", "links?"))
            except WireError:
                continue
            if self.silent:
                continue
            if isinstance(req, LinksRequest):
                self.router.send_multipart([ident, *encode(self.links(req))])
                continue
            assert isinstance(req, OpenRequest)
            self.opened.append(req.seq)
            reply = [ident, *encode(self._reply(req))]
            if not self.delay_s:
                self.router.send_multipart(reply)
            elif req.seq not in self._late:  # retries carry the same nonce: one answer
                self._late[req.seq] = (time.monotonic() + self.delay_s, reply)

    def _reply(self, req: OpenRequest) -> OpenReply:
        data = self.records.get(req.seq)
        if data is not None and self.tamper:
            data = data[:-1] + bytes([data[-1] ^ 1])
        status: OpenStatus = "ok" if data is not None else "unknown"
        if data is not None and self.purge:
            status, data = "purged", None
        return OpenReply(
            node=self.name,
            t=time.time(),
            seq=req.seq,
            nonce=req.nonce,
            status=status,
            record=data,
            reason={"ok": "", "unknown": "no such record", "purged": "removed by retention"}[
                status
            ],
        )

    def _send_due(self) -> None:
        """Send the delayed answers whose time has come."""
        now = time.monotonic()
        for seq, (when, frames) in list(self._late.items()):
            if now >= when:
                self.router.send_multipart(frames)
                self._late[seq] = (float("inf"), frames)  # answered: never again

    def links(self, req: LinksRequest) -> LinksReply:
        """What an agent answers from its log (agents/openings.py answer_links)."""
        seg = [
            Link(seq=c.seq, record_digest=c.record_digest, chain=c.chain, commit=c)
            for s in range(req.first, req.first + req.count)
            if (c := self.commits.get(s)) is not None
        ]
        base: dict[str, Any] = {
            "node": self.name,
            "t": time.time(),
            "nonce": req.nonce,
            "first": req.first,
        }
        if not seg:
            return LinksReply(**base, status="unknown", log_head=self.seq - 1)
        last = seg[-1]
        head = self.head_for(last.commit) if last.commit else None
        return LinksReply(**base, status="ok", links=seg, head=head, log_head=self.seq - 1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.pub.close(linger=0)
        self.router.close(linger=0)

    def config_entry(self) -> dict[str, str]:
        """This node as a `[[node]]` table of the daemon's config."""
        return {
            "name": self.name,
            "publish": self.publish_endpoint,
            "openings": self.openings_endpoint,
            "sign_pubkey": self.pubkey.hex(),
        }


def daemon_doc(tmp: Any, nodes: list[ProverNode], **sections: dict[str, Any]) -> dict[str, Any]:
    """A daemon config (as the TOML document's dict) for `nodes`, on random loopback ports."""
    import os
    from pathlib import Path

    key = Path(tmp) / "sampling.key"
    if not key.exists():
        key.write_text(os.urandom(32).hex())
        key.chmod(0o600)
    doc: dict[str, Any] = {
        "replay": {
            "store": str(Path(tmp) / "replay.sqlite"),
            "publish": "tcp://127.0.0.1:0",
            "state": "tcp://127.0.0.1:0",
        },
        "sampling": {"key_file": str(key), "rate": 1.0},
        # A short grace: tests that wait for `unopened` wait for it too.
        "openings": {"deadline_s": 1.0, "retries": 1, "grace_s": 1.0},
        "node": [n.config_entry() for n in nodes],
    }
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    return doc


def wait_subscribed(nodes: list[ProverNode], daemon: Any, timeout: float = 10.0) -> None:
    """Publish telemetry until the daemon has seen some from every node (slow joiner)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in nodes:
            n.telemetry()
        stats = daemon.intake.stats
        if all(stats[n.name].last_telemetry_t > 0 for n in nodes):
            return
        time.sleep(0.05)
    raise TimeoutError("the daemon never received telemetry from every node")


def read_verdicts(store: Any) -> list[dict[str, Any]]:
    """Every verdict in a daemon's store as plain maps, read through a separate connection (WAL)."""
    import sqlite3

    import msgspec

    db = sqlite3.connect(str(store))
    try:
        rows = db.execute("SELECT body FROM verdicts ORDER BY sid").fetchall()
    except sqlite3.OperationalError:
        rows = []
    finally:
        db.close()
    dec = msgspec.msgpack.Decoder(Verdict)
    return [dec.decode(r[0]).to_map() for r in rows]


def wait_verdicts(store: Any, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got = read_verdicts(store)
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)
