"""Covert rows on real records: the judge checks every opened record's batch manifest.

Records come from the test fleet (`ProverNode`, real engine, a manifest as an agent builds one)
and from the agent's own red-team code (`RedTeam.declare`), so each lie here is the one a real
cheating agent tells.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time

import msgspec
import pytest

from fpmon import manifest
from fpmon.agents.config import EngineConfig
from fpmon.agents.redteam import RedTeam
from fpmon.records import Record
from fpmon.replay import calibration
from fpmon.replay.engines import EngineCache
from fpmon.replay.judge import Judge, JudgeOptions
from fpmon.replay.rows import BLIND_SPOT, RowBook, check_record
from fpmon.testing.fleet import ProverNode
from fpmon.wire import Commit
from fpmon.wire.messages import STATUSES, ClientRequest, ManifestRow

DECLARED = EngineConfig(dtype="bfloat16", attn="sdpa")


@pytest.fixture(scope="module")
def node():
    n = ProverNode("rows")
    yield n
    n.close()


@pytest.fixture(scope="module")
def bf(tiny_engine):
    return tiny_engine("bfloat16", "sdpa")


@pytest.fixture
def judge_with(shared_engines):
    def _judge_with(
        book: RowBook | None = None, policy: str = "require", wait: float = 0.05
    ) -> Judge:
        opts = JudgeOptions(False, manifests=policy, link_wait_s=wait)  # type: ignore[arg-type]
        j = Judge(
            EngineCache({"tiny": "tiny"}, factory=shared_engines), calibration.Calibration(), opts
        )
        j.rows = book
        return j

    return _judge_with


def book_of(node: ProverNode) -> RowBook:
    """What the daemon's intake would hold: every commit the node made so far, verified."""
    book = RowBook()
    for seq in sorted(node.commits):
        book.add(node.commits[seq])
    return book


def opened(node: ProverNode, c: Commit) -> Record:
    return Record.decode(node.records[c.seq])


def recommit(c: Commit, rec: Record) -> tuple[Commit, bytes]:
    """The commitment an agent would publish for `rec` (the lie told consistently)."""
    fixed = msgspec.structs.replace(
        c,
        request_id=rec.request_id,
        record_digest=rec.digest(),
        setup=rec.setup.to_map(),
        prompt_tokens=len(rec.prompt_ids),
        manifest=manifest.root(rec.manifest),
    )
    return fixed, rec.encode()


def test_honest_batches_of_one_and_of_several_match(node, bf, judge_with) -> None:
    one = node.make(bf, bf.encode("a request on its own"))
    several = node.make_batch(
        bf, [bf.encode("first of three"), bf.encode("the second, longer request"), [5, 6, 7]]
    )
    judge = judge_with(book_of(node))
    for c in [one, *several]:
        v = judge.judge(c, node.records[c.seq]).verdict
        assert v.status == "match", v.reason
        assert not any("linked" in n for n in v.evidence.notes)
    rec = opened(node, several[1])
    assert [r.request_id for r in rec.manifest or ()] == [c.request_id for c in several]
    assert len({c.manifest for c in several}) == 1 and several[0].manifest != one.manifest


def test_filler_rows_are_covert_without_any_replay(node, bf, judge_with) -> None:
    c = node.make(bf, bf.encode("beside three fillers"), batch_size=4, slot=0)
    j = judge_with(book_of(node)).judge(c, node.records[c.seq])
    v = j.verdict
    assert v.status == "covert_rows" and j.suspect and v.replay_s == 0.0
    assert "rows 1, 2, 3 of 4 ran with no client request behind them" in v.reason
    assert BLIND_SPOT in v.reason and "hidden work" in v.reason
    assert any("fillers" in n for n in v.evidence.notes)


def lie(node: ProverNode, bf, hide_rows: str, text: str) -> tuple[Commit, bytes]:
    """What the agent's red team makes of a request run beside 3 fillers."""
    c = node.make(bf, bf.encode(text), batch_size=4, slot=0)
    rt = RedTeam(enabled=True, actual_batch=4, hide_rows=hide_rows)
    return recommit(c, rt.declare(opened(node, c), DECLARED))


def test_declaring_batch_1_beside_a_4_row_manifest_is_covert(node, bf, judge_with) -> None:
    c, data = lie(node, bf, "", "the red team's plain batch lie")
    rec = Record.decode(data)
    assert (rec.setup.batch_size, len(rec.schedule["row_lengths"]), len(rec.manifest)) == (1, 1, 4)
    v = judge_with(book_of(node)).judge(c, data).verdict
    assert v.status == "covert_rows"
    assert "the manifest lists 4 rows, but the record declares batch 1 and its schedule 1 rows" in (
        v.reason
    )


def test_stripping_the_fillers_everywhere_is_the_blind_spot(node, bf, judge_with) -> None:
    c, data = lie(node, bf, "strip", "stripped of its fillers")
    rec = Record.decode(data)
    assert not check_record(rec).findings  # a consistent record: nothing in it to contradict
    v = judge_with(book_of(node)).judge(c, data).verdict
    # bfloat16 on this CPU computes batch 4 and batch 1 alike: the lie passes (float32 numerics
    # catch it; tests/functional/test_replay_agents.py). Named as the blind spot in the docs.
    assert v.status == "match"


def test_forged_requests_for_the_fillers_contradict_the_nodes_own_commitments(
    node, bf, judge_with
) -> None:
    c, data = lie(node, bf, "forge", "fillers dressed as requests")
    rec = Record.decode(data)
    assert rec.setup.batch_size == 4 and all(r.request_id for r in rec.manifest or ())
    # Judged before the node committed anything after it: nothing to link the rows to.
    v = judge_with(book_of(node)).judge(c, data).verdict
    assert v.status == "match"  # batch 4 declared truthfully: the numerics agree
    assert any("not committed when judged" in n for n in v.evidence.notes)
    # The node serves on: the seqs the forged rows claim hold other requests.
    later = node.make(bf, bf.encode("the next real request"))
    v = judge_with(book_of(node)).judge(c, data).verdict
    assert v.status == "covert_rows"
    assert f"seq {c.seq + 1} is for request {later.request_id!r}" in v.reason
    assert "rows 2, 3: not committed when judged" in " ".join(v.evidence.notes)


def test_a_judgement_waiting_for_a_sibling_wakes_when_it_is_committed(node, bf, judge_with) -> None:
    c, data = lie(node, bf, "forge", "waiting for the next commit")
    book = book_of(node)
    judge = judge_with(book, wait=60.0)
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(judge.judge(c, data).verdict.status))
    t0 = time.monotonic()
    t.start()
    for i in range(3):  # the node serves on: the seqs its forged rows claim fill up
        book.add(node.make(bf, bf.encode(f"a later request {i}")))
    t.join(timeout=50)
    assert out == ["covert_rows"] and time.monotonic() - t0 < 50


def test_rows_hidden_from_the_manifest_but_not_from_the_schedule(node, bf, judge_with) -> None:
    c = node.make(bf, bf.encode("schedule shows four"), batch_size=4, slot=0)
    rec = opened(node, c)
    rec = dataclasses.replace(rec, setup=rec.setup.replace(batch_size=1), manifest=rec.manifest[:1])
    v = judge_with().judge(*recommit(c, rec)).verdict
    assert v.status == "covert_rows"
    assert "the manifest lists 1 row, but the record declares batch 1 and its schedule 4 rows" in (
        v.reason
    )


def own_row(rec: Record, req: ClientRequest, request_id: str | None = None) -> Record:
    """`rec` with another client request in its own row, the manifest consistent with it."""
    rows = list(rec.manifest or ())
    rows[rec.setup.slot] = manifest.row_for(request_id or rec.request_id, req)
    return dataclasses.replace(rec, manifest=tuple(rows), request=req)


@pytest.mark.parametrize(
    ("change", "finding"),
    [
        (lambda r: own_row(r, r.request, "someone-else"), "names request 'someone-else'"),
        (
            lambda r: dataclasses.replace(r, request=manifest.token_request("x", [9], 99)),
            "digest is not that of the client request",
        ),
        (
            lambda r: own_row(r, manifest.token_request(r.request_id, [9, 9, 9], 99)),
            "prompt tokens are not the token ids its client sent",
        ),
        (
            lambda r: own_row(r, manifest.token_request(r.request_id, r.prompt_ids, 1)),
            "its client asked for at most 1",
        ),
        (
            lambda r: own_row(r, manifest.token_request("another-id", r.prompt_ids, 99)),
            "client request is request 'another-id'",
        ),
        (lambda r: own_row(r, ClientRequest(submit=b"\x93\x01")), "not a submit message"),
        (lambda r: dataclasses.replace(r, request=None), "does not carry its own client request"),
        (
            lambda r: dataclasses.replace(r, setup=r.setup.replace(slot=3, batch_size=4)),
            "slot 3 is outside its manifest's 1 rows",
        ),
    ],
)
def test_the_own_row_must_be_the_clients_request(node, bf, change, finding, judge_with) -> None:
    c = node.make(bf, bf.encode("my own row"))
    v = judge_with().judge(*recommit(c, change(opened(node, c)))).verdict
    assert v.status == "covert_rows" and finding in v.reason, v.reason


def test_a_text_prompt_is_checked_through_the_reference_tokenizer(node, bf, judge_with) -> None:
    from fpmon.wire import SubmitRequest
    from fpmon.wire.codec import payload

    c = node.make(bf, bf.encode("tokenised by the node"))
    rec = opened(node, c)

    def text(prompt: str) -> ClientRequest:
        msg = SubmitRequest(
            node="client", t=1.0, request_id=rec.request_id, prompt=prompt, max_tokens=99
        )
        return ClientRequest(client="K" * 40, submit=payload(msg))

    v = judge_with().judge(*recommit(c, own_row(rec, text("tokenised by the node")))).verdict
    assert v.status == "match"
    v = judge_with().judge(*recommit(c, own_row(rec, text("another prompt")))).verdict
    assert v.status == "covert_rows" and "as the reference tokenizer reads it" in v.reason


def test_one_request_in_two_rows_and_rows_without_a_digest(node, bf, judge_with) -> None:
    cs = node.make_batch(bf, [bf.encode("row zero"), bf.encode("row one")])
    rec = opened(node, cs[0])
    r0, r1 = rec.manifest or ()
    cases = {
        "name the same request id": (r0, msgspec.structs.replace(r1, request_id=r0.request_id)),
        "name the same client request": (r0, msgspec.structs.replace(r1, digest=r0.digest)),
        "no request id or no sha256": (r0, ManifestRow(request_id="r", digest=b"short")),
    }
    for finding, rows in cases.items():
        v = judge_with().judge(*recommit(cs[0], dataclasses.replace(rec, manifest=rows))).verdict
        assert v.status == "covert_rows" and finding in v.reason, v.reason


def test_without_a_manifest_the_policy_decides(node, bf, judge_with) -> None:
    c = node.make(bf, bf.encode("an agent before manifests"))
    bare = dataclasses.replace(opened(node, c), manifest=None, request=None)
    c2, data = recommit(c, bare)
    assert c2.manifest == b""
    v = judge_with(policy="require").judge(c2, data).verdict
    assert v.status == "covert_rows" and "carries no row manifest" in v.reason
    v = judge_with(policy="check").judge(c2, data).verdict
    assert v.status == "match" and any("no row manifest" in n for n in v.evidence.notes)
    # "off" ignores even a manifest full of fillers
    f = node.make(bf, bf.encode("fillers, unchecked"), batch_size=2, slot=0)
    assert judge_with(policy="off").judge(f, node.records[f.seq]).verdict.status == "match"


def test_a_manifest_other_than_the_committed_root_is_a_bad_opening(node, bf, judge_with) -> None:
    cs = node.make_batch(bf, [bf.encode("one"), bf.encode("two")])
    other = msgspec.structs.replace(cs[0], manifest=cs[0].manifest[:-1] + b"\0")
    v = judge_with().judge(other, node.records[cs[0].seq]).verdict
    assert v.status == "bad_opening" and "manifest" in v.reason


def test_an_oversized_manifest_is_refused_before_anything_else(node, bf, judge_with) -> None:
    c = node.make(bf, bf.encode("four thousand rows"))
    rec = opened(node, c)
    rows = (manifest.FILLER,) * (manifest.MAX_ROWS + 1)
    c2, data = recommit(c, dataclasses.replace(rec, manifest=rows))
    t0 = time.perf_counter()
    v = judge_with().judge(c2, data).verdict
    assert v.status == "bad_opening" and "not a record" in v.reason and "4096" in v.reason
    assert time.perf_counter() - t0 < 1.0


def test_hostile_manifests_are_judged_never_raised(node, bf, judge_with) -> None:
    """Rows shuffled, dropped, added, renamed, emptied, digests cut: every one a verdict."""
    cs = node.make_batch(bf, [bf.encode("hostile"), bf.encode("rows"), [3, 4, 5]])
    book = book_of(node)
    judge = judge_with(book, wait=0.0)
    rng = random.Random(14)
    rec = opened(node, cs[1])
    seen = set()
    for _ in range(40):
        rows = list(rec.manifest or ())
        op = rng.choice(["shuffle", "drop", "add", "rename", "empty", "cut", "slot"])
        if op == "shuffle":
            rng.shuffle(rows)
        elif op == "drop":
            rows.pop(rng.randrange(len(rows)))
        elif op == "add":
            rows.insert(rng.randrange(len(rows) + 1), rng.choice([manifest.FILLER, rows[0]]))
        elif op == "rename":
            i = rng.randrange(len(rows))
            rows[i] = msgspec.structs.replace(rows[i], request_id="x" * rng.randrange(0, 257))
        elif op == "empty":
            rows = []
        elif op == "cut":
            i = rng.randrange(len(rows))
            rows[i] = msgspec.structs.replace(rows[i], digest=rows[i].digest[: rng.randrange(33)])
        changed = dataclasses.replace(rec, manifest=tuple(rows))
        if op == "slot":
            b = rng.randrange(1, 6)
            changed = dataclasses.replace(
                rec, setup=rec.setup.replace(batch_size=b, slot=rng.randrange(b))
            )
        v = judge.judge(*recommit(cs[1], changed)).verdict
        assert v.status in STATUSES
        seen.add(v.status)
    assert "covert_rows" in seen


def test_the_book_forgets_beyond_its_window() -> None:
    book = RowBook(window=3)
    for seq in range(5):
        book.add(
            Commit(
                node="n",
                t=1.0,
                seq=seq,
                request_id=f"r{seq}",
                record_digest=b"d",
                chain=b"c",
                setup={"slot": 0, "batch_size": 1},
                model="tiny",
                prompt_tokens=1,
                output_tokens=1,
            )
        )
    assert [book.get("n", s) is not None for s in range(5)] == [False, False, True, True, True]
    assert book.high("n") == 4 and book.high("other") == -1
    assert book.wait_for("n", 4, 0.0) and not book.wait_for("n", 5, 0.0)


def test_a_per_node_policy_overrides_the_default(node, bf, judge_with) -> None:
    # A vLLM sidecar node is configured `manifests = "check"`; every other node stays `require`.
    c = node.make(bf, bf.encode("served by a sidecar"))
    bare = dataclasses.replace(opened(node, c), manifest=None, request=None)
    c2, data = recommit(c, bare)
    j = judge_with()
    assert j.judge(c2, data).verdict.status == "covert_rows"
    j.options = dataclasses.replace(j.options, node_manifests={c2.node: "check"})
    assert j.judge(c2, data).verdict.status == "match"


def test_a_schedule_that_is_not_rows_is_a_finding_not_an_error(node, bf) -> None:
    c = node.make(bf, bf.encode("odd schedule"))
    rec = opened(node, c)
    odd = dataclasses.replace(
        rec, schedule={**rec.schedule, "row_lengths": 5, "output_lengths": [1]}
    )
    out = check_record(odd, "require")
    assert any("row_lengths is not a list" in f for f in out.findings)
