"""Do vLLM schedules move the numerics on this machine? Measured, not assumed.

One request (teacher-forced to the same tokens) runs under several schedules on one engine:
one whole prefill; 8-token and 3-token prefill chunks; chunks mixed into steps with other
requests' decodes (continuous batching under load); decode beside 1, 3 and 7 other requests.
Its probes are compared with the first schedule's, bit for bit.

    python bench/vllm_schedules.py --dtype bfloat16
    python bench/vllm_schedules.py --dtype float32
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

PROMPT_TOKENS = 40
STEPS = 12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()

    from fpmon.capture import record_from_row
    from fpmon.compare import compare_records
    from fpmon.engines.base import ProbeSpec, default_layers
    from fpmon.engines.batching import filler_ids
    from fpmon.engines.vllm import VLLMEngine
    from fpmon.engines.vllm import schedule as vsched
    from fpmon.engines.vllm.engine import VRequest

    eng = VLLMEngine("tiny", dtype=args.dtype, max_num_batched_tokens=64, max_num_seqs=8)
    probes = ProbeSpec(tuple(default_layers(eng.num_layers)))
    prompt = filler_ids(PROMPT_TOKENS, 99, eng.vocab_limit)
    n_out = STEPS + 1

    def run(plan_steps, others: list[int], arrivals: list[int], forced):
        lengths = [PROMPT_TOKENS] + [PROMPT_TOKENS] * len(others)
        outs = [n_out, *others]
        plan = vsched.Plan(lengths, outs, arrivals, plan_steps, [], eng.config, [0] * len(lengths))
        reqs = [VRequest(prompt, n_out, forced, arrivals[0])] + [
            VRequest(filler_ids(PROMPT_TOKENS, i + 1, eng.vocab_limit), o, None, arrivals[i + 1])
            for i, o in enumerate(others)
        ]
        res = eng.run_requests(reqs, probes, plan)
        if [list(s) for s in res.sched_log] != [list(s) for s in plan_steps]:
            raise SystemExit(f"vLLM did not follow the plan: {res.sched_log}")
        batch = eng.result_of(reqs, res, [0], probes, STEPS)
        return record_from_row(
            eng, batch, 0, prompt, probes, node="b", seq=0, request_id="x", t_start=0, t_end=0
        )

    def chunks(size: int, start: int = 0) -> list[list[tuple[int, int]]]:
        return [[(0, min(size, PROMPT_TOKENS - a))] for a in range(start, PROMPT_TOKENS, size)]

    decode = [[(0, 1)] for _ in range(STEPS)]
    base = run(chunks(PROMPT_TOKENS) + decode, [], [0], None)
    forced = list(base.output_ids)
    cases = {"whole prefill, alone (reference)": base}
    cases["8-token chunks"] = run(chunks(8) + decode, [], [0], forced)
    cases["3-token chunks"] = run(chunks(3) + decode, [], [0], forced)
    # Others first prefill; then our chunks share steps with their decodes.
    k = 3
    mixed = [[(i + 1, PROMPT_TOKENS)] for i in range(k)]
    mixed += [[(1, 1), (2, 1), (3, 1), (0, c[0][1])] for c in chunks(8)]
    mixed += [[(1, 1), (2, 1), (3, 1), (0, 1)] for _ in range(STEPS)]
    outs = [1 + len(chunks(8)) + STEPS] * k
    cases["8-token chunks mixed with 3 decodes"] = run(mixed, outs, [k, 0, 1, 2], forced)
    for others in (1, 3, 7):
        pre = [[(i + 1, PROMPT_TOKENS)] for i in range(others)]
        steps = [*pre, [(0, PROMPT_TOKENS)]]
        steps += [[*((i + 1, 1) for i in range(others)), (0, 1)] for _ in range(STEPS)]
        outs = [1 + 1 + STEPS] * others
        arrivals = [others, *range(others)]
        cases[f"decode beside {others} others"] = run(steps, outs, arrivals, forced)

    print(f"setup {eng.setup.summary()}; prompt {PROMPT_TOKENS} tokens, {STEPS} decode steps")
    for name, rec in cases.items():
        cmp = compare_records(base, rec)
        diff = ", ".join(f"{p.probe} rel {p.rel:.1e}" for p in cmp.differing()) or "-"
        print(f"{name:40} {'identical' if cmp.identical else 'DIFFERS':10} {diff}")
    eng.close()


if __name__ == "__main__":
    main()
