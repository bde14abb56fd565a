"""The per-step schedule of a vLLM run: what a record carries and what replay rebuilds.

Pure data, no vLLM: the prover builds it from the scheduler's log and the worker's layouts,
the verifier checks it and derives the plan to follow. Requests are named by their index in
the run (`requests[i]`), never by the node's request ids.

    {"kind": "vllm", "v": 1,
     "row_lengths": [prompt tokens per request],        # the run's requests, in row order
     "output_lengths": [generated tokens per request],
     "arrivals": [first step each request was scheduled],
     "computed_before": [tokens each request had computed before step 0],  # window records
     "window": false,          # true: the steps of one request's life inside a longer stream
     "decode_steps": N,                                  # of the record's own request
     "config": {"max_num_batched_tokens": .., "max_num_seqs": .., "chunked_prefill": ..},
     "steps": [{"sched": [[req, tokens], ...],          # vLLM's scheduling order
                "ran": [[req, tokens, first_position], ...],  # the model's row order
                "tokens": total, "seqs": count}, ...]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fpmon.errors import FpmonError

KIND = "vllm"
VERSION = 1


@dataclass
class Plan:
    """What replay must run: request shapes, arrivals and each step's [(req, tokens)].

    `prelude` steps come first and only bring requests that were already part-way through
    (a window record) to where the recorded steps found them; `arrivals` count from the start
    of the prelude. The recorded steps follow.
    """

    row_lengths: list[int]
    output_lengths: list[int]
    arrivals: list[int]
    steps: list[list[tuple[int, int]]]
    ran: list[list[tuple[int, int, int]]]
    config: dict[str, Any]
    computed_before: list[int]
    window: bool = False
    prelude: int = 0

    def with_prelude(self, budget: int) -> Plan:
        """Steps that run each part-way request alone up to its recorded starting point."""
        pre: list[list[tuple[int, int]]] = []
        arrivals = list(self.arrivals)
        for r, c in enumerate(self.computed_before):
            if c == 0:
                continue
            arrivals[r] = len(pre)
            done = 0
            while done < min(c, self.row_lengths[r]):
                k = min(budget, min(c, self.row_lengths[r]) - done)
                pre.append([(r, k)])
                done += k
            pre.extend([(r, 1)] for _ in range(c - done))
        offset = len(pre)
        for r, c in enumerate(self.computed_before):
            if c == 0:
                arrivals[r] += offset
        return Plan(
            self.row_lengths,
            self.output_lengths,
            arrivals,
            pre + self.steps,
            self.ran,
            self.config,
            self.computed_before,
            self.window,
            offset,
        )

    @property
    def max_tokens(self) -> int:
        return max((sum(n for _, n in s) for s in self.steps), default=0)

    @property
    def max_seqs(self) -> int:
        return max((len(s) for s in self.steps), default=0)


def build(
    row_lengths: list[int],
    output_lengths: list[int],
    sched_log: list[list[tuple[int, int]]],
    ran_log: list[list[tuple[int, int, int]]],
    decode_steps: int,
    config: dict[str, Any],
    computed_before: list[int] | None = None,
) -> dict[str, Any]:
    """The schedule map of one run, from the scheduler's log and the worker's layouts."""
    if len(sched_log) != len(ran_log):
        raise FpmonError(
            f"vLLM scheduled {len(sched_log)} steps but the model ran {len(ran_log)}: the "
            "capture lost track of the schedule (is async scheduling or multiprocessing on?)"
        )
    arrivals = [-1] * len(row_lengths)
    for i, step in enumerate(sched_log):
        for req, _n in step:
            if arrivals[req] < 0:
                arrivals[req] = i
    return {
        "kind": KIND,
        "v": VERSION,
        "row_lengths": list(row_lengths),
        "output_lengths": list(output_lengths),
        "arrivals": arrivals,
        "computed_before": [int(c) for c in (computed_before or [0] * len(row_lengths))],
        "window": computed_before is not None,
        "decode_steps": int(decode_steps),
        "config": dict(config),
        "steps": [
            {
                "sched": [[int(r), int(n)] for r, n in s],
                "ran": [[int(r), int(n), int(p)] for r, n, p in ran],
                "tokens": sum(n for _, n in s),
                "seqs": len(s),
            }
            for s, ran in zip(sched_log, ran_log, strict=True)
        ],
    }


def _bad(why: str) -> FpmonError:
    return FpmonError(f"the record's vLLM schedule cannot be rebuilt: {why}")


def plan_of(sched: dict[str, Any], slot: int, prompt_len: int, output_len: int) -> Plan:
    """Check a recorded schedule for consistency and turn it into a plan, or say why not."""
    if sched.get("kind") != KIND:
        raise _bad(f"it is of kind {sched.get('kind')!r}, not {KIND!r}")
    if sched.get("v") != VERSION:
        raise _bad(f"schema v{sched.get('v')} is not v{VERSION}; capture it with this fpmon")
    try:
        lengths = [int(x) for x in sched["row_lengths"]]
        outs = [int(x) for x in sched["output_lengths"]]
        arrivals = [int(x) for x in sched["arrivals"]]
        steps = [[(int(r), int(n)) for r, n in s["sched"]] for s in sched["steps"]]
        ran = [[(int(r), int(n), int(p)) for r, n, p in s["ran"]] for s in sched["steps"]]
        config = dict(sched.get("config", {}))
        before = [int(x) for x in sched.get("computed_before", [0] * len(lengths))]
        window = bool(sched.get("window", False))
    except (KeyError, TypeError, ValueError) as e:
        raise _bad(f"a field is missing or malformed ({e})") from e
    n = len(lengths)
    if not (len(outs) == len(arrivals) == len(before) == n) or n == 0:
        raise _bad("row_lengths, output_lengths and arrivals disagree on the number of requests")
    if not 0 <= slot < n:
        raise _bad(f"the record's slot {slot} is outside the run's {n} requests")
    if lengths[slot] != prompt_len or outs[slot] != output_len:
        raise _bad("the record's own prompt or output length differs from its schedule row")
    # Replaying every step must compute each request's tokens exactly once, in order.
    if any(not 0 <= c < lengths[r] + max(outs[r], 1) for r, c in enumerate(before)):
        raise _bad("a request starts the steps with more tokens computed than it has")
    if before[slot] != 0:
        raise _bad("the record's own request must start inside its steps")
    done = list(before)
    for i, (step, layout) in enumerate(zip(steps, ran, strict=True)):
        if not step:
            raise _bad(f"step {i} schedules nothing")
        seen = set()
        for r, k in step:
            if not 0 <= r < n or r in seen or k < 1:
                raise _bad(f"step {i} names request {r} twice, out of range, or with {k} tokens")
            seen.add(r)
            if arrivals[r] > i:
                raise _bad(f"request {r} runs at step {i}, before its arrival {arrivals[r]}")
            if done[r] < lengths[r] and done[r] + k > lengths[r]:
                raise _bad(f"step {i} runs past request {r}'s prompt inside one chunk")
            if done[r] >= lengths[r] and k != 1:
                raise _bad(f"step {i} gives request {r} {k} tokens in decode (expected 1)")
            done[r] += k
        if sorted((r, k) for r, k, _p in layout) != sorted(step):
            raise _bad(f"step {i}'s model rows do not hold the tokens it scheduled")
    for r in range(n):
        # A request emits its first token with its last prompt chunk, then one per decode;
        # in a window, a request may still be part-way through its prompt at the end.
        need = lengths[r] + outs[r] - 1 if outs[r] else None
        if (need is not None and done[r] != need) or (need is None and done[r] > lengths[r]):
            raise _bad(
                f"request {r} computes {done[r]} tokens over the steps, but its prompt and "
                f"output need {lengths[r] + outs[r] - 1}"
            )
    return Plan(lengths, outs, arrivals, steps, ran, config, before, window)
