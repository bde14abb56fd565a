"""Load on the monitor: 1,000 nodes x 8 GPUs of telemetry at 1 Hz plus 2,000 verdicts/s
(2% of them mismatches, each with its alert, as the replay daemon raises them).

Feeds (1) the plain state model and (2) the real Textual app, headless, through the same path
the feed worker uses (decoded wire messages into the inbox, one coalesced FeedReady per burst),
in real time: every 100 ms a burst of 100 telemetry + 200 verdict messages; the app repaints
from the model every `--refresh` seconds. Prints p50/p99 of the time to apply a burst, of a
repaint, and of apply+repaint, against the 100 ms target, plus resident memory over time:
sampled every 2 s, its slope (MiB/min) while the bounded buffers fill and over the steady part
after them, and whether that part is flat (|slope| < 0.5 MiB/min).

    python bench/monitor_load.py                 # 30 s
    python bench/monitor_load.py --seconds 300 --size 160x40   # the memory run
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

import msgspec

from fpmon.monitor.app import MonitorApp, tune_gc
from fpmon.monitor.config import MonitorConfig, WatchConfig
from fpmon.monitor.model import FleetModel
from fpmon.testing import synth
from fpmon.wire import decode, encode

NODES = 1000
GPUS = 8
VERDICTS_PER_S = 2000
BURST_S = 0.1
TARGET_MS = 100.0
WARMUP_S = 3.0  # the first repaints add the 1,000 rows: reported apart from steady state
MEM_EVERY_S = 2.0  # RSS sample period
MEM_SETTLE_S = 10.0  # memory is judged from this long after the buffers are full
FLAT_MIB_PER_MIN = 0.5  # |slope| below this over the steady part: flat


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def slope_per_min(pts: list[tuple[float, float]]) -> float:
    """Least-squares slope of (s, MiB) points, in MiB per minute."""
    try:
        return 60 * statistics.linear_regression(*zip(*pts, strict=True)).slope
    except (statistics.StatisticsError, TypeError):  # fewer than 2 points, or one instant
        return float("nan")


def make_frames(rng: random.Random) -> tuple[list[list[bytes]], list[list[bytes]]]:
    """Wire frames encoded once (the publishers' work): telemetry per node, a verdict pool."""
    names = [f"node-{i:04d}" for i in range(NODES)]
    tele = [encode(synth.telemetry(n, GPUS, util=rng.uniform(10, 99))) for n in names[1:]]
    # One node doing hidden work: GPM figures and a foreign process on its GPUs.
    tele.insert(0, encode(synth.gpm_telemetry(names[0], hidden=True, gpus=GPUS)))
    verdicts = [encode(synth.random_verdict(rng, names, seq)) for seq in range(4000)]
    return tele, verdicts


class Source:
    """Bursts of decoded messages (decoding is the feed worker's job: timed separately)."""

    def __init__(self, rng: random.Random) -> None:
        self.tele, self.verdicts = make_frames(rng)
        self.i = 0
        self.v = 0
        self.decode_s: list[float] = []

    def burst(self) -> list:
        n_t = int(NODES * BURST_S)  # each node once a second
        n_v = int(VERDICTS_PER_S * BURST_S)
        frames = [self.tele[(self.i + k) % NODES] for k in range(n_t)]
        frames += [self.verdicts[(self.v + k) % len(self.verdicts)] for k in range(n_v)]
        t0 = time.perf_counter()
        out = [decode(f) for f in frames]
        self.decode_s.append(time.perf_counter() - t0)
        # Pool verdicts come round again: give each a fresh seq, or the model's Clone dedupe
        # (node, seq, status, t) would rightly drop them as repeats. And, as the replay daemon
        # does, one alert per bad verdict, each with its own id (2% of them: 40 a second).
        alerts = []
        for k in range(n_t, len(out)):
            v = out[k] = msgspec.structs.replace(out[k], seq=self.v + k - n_t)
            if v.status != "match":
                alerts.append(synth.alert(v.node, v.status, v.seq))
        self.i += n_t
        self.v += n_v
        return out + alerts


def report(name: str, xs: list[float]) -> float:
    ms = [x * 1000 for x in xs]
    if not ms:
        print(f"  {name:<28} (no samples: run longer)")
        return float("nan")
    p99 = pct(ms, 0.99)
    print(f"  {name:<28} p50 {pct(ms, 0.5):7.2f} ms  p99 {p99:7.2f} ms  max {max(ms):7.2f} ms")
    return p99


def bench_model(seconds: float, rng: random.Random) -> None:
    src = Source(rng)
    model = FleetModel()
    apply_s, tick_s = [], []
    end = time.monotonic() + seconds
    last_tick = time.monotonic()
    while time.monotonic() < end:
        t_next = time.monotonic() + BURST_S
        msgs = src.burst()
        t0 = time.perf_counter()
        model.apply_many(msgs)
        apply_s.append(time.perf_counter() - t0)
        if time.monotonic() - last_tick >= 1.0:
            t0 = time.perf_counter()
            model.tick()
            model.take_dirty()
            tick_s.append(time.perf_counter() - t0)
            last_tick = time.monotonic()
        time.sleep(max(0.0, t_next - time.monotonic()))
    print(f"state model alone ({len(apply_s)} bursts of {len(msgs)} messages):")
    report("apply burst", apply_s)
    report("tick (1,000 nodes)", tick_s)
    report("wire decode of a burst", src.decode_s)
    print(
        f"  nodes {len(model.nodes)}, verdicts kept {len(model.verdicts)} of {model.verdicts_total}"
    )


async def bench_app(
    seconds: float,
    refresh: float,
    rng: random.Random,
    tune: bool = True,
    size: tuple[int, int] = (200, 50),
) -> float:
    src = Source(rng)
    cfg = MonitorConfig(
        monitor=WatchConfig(refresh_s=3600)
    )  # we drive repaints ourselves, to time them
    app = MonitorApp(cfg, start_feed=False)
    if tune:
        tune_gc()  # as `fpmon` / `fpmon demo` do before app.run()
    apply_s, paint_s, cycle_s, mem, warm, when, cpu_s = [], [], [], [], [], [], []
    full_at: float | None = None  # when every bounded buffer first was full
    async with app.run_test(size=size) as pilot:
        # The bounded buffers that fill under this load: the model's verdict feed (5,000: a
        # few seconds) and the fleet table's cell render cache (two screens of cells, sized
        # and replaced on every resize: read it afresh). The model's per-node buffers are taken
        # whole when a node appears (monitor/history.py); the Clone dedupe sets fill with the
        # feed.
        table = app.screen.query_one("#fleet")
        t_start = time.monotonic()
        last_paint = last_mem = t_start
        while (now := time.monotonic()) - t_start < seconds:
            t_next = now + BURST_S
            for m in src.burst():
                app.inbox.put(m)
            t0 = time.perf_counter()
            c0 = time.process_time()
            app.drain_feed()  # what the FeedReady handler runs
            t1 = time.perf_counter()
            apply_s.append(t1 - t0)
            if now - last_paint >= refresh:
                app.repaint()
                await pilot.pause()  # let Textual lay out and render the changed table
                t2 = time.perf_counter()
                if now - t_start >= WARMUP_S:  # steady state: the first 1,000 rows are added once
                    paint_s.append(t2 - t1)
                    cycle_s.append(t2 - t0)
                    cpu_s.append(time.process_time() - c0)
                    when.append((t2 - t0, now - t_start))
                else:
                    warm.append(t2 - t0)
                last_paint = now
            if now - last_mem >= MEM_EVERY_S:
                kept = len(app.model.verdicts)
                cells = table._cell_render_cache
                mem.append((now - t_start, rss_mib(), kept, len(cells)))
                full = kept == app.model.verdicts.maxlen and len(cells) >= cells.maxsize
                if full_at is None and full:
                    full_at = now - t_start
                last_mem = now
            await asyncio.sleep(max(0.0, t_next - time.monotonic()))
        rows = table.row_count
    print(
        f"real app, headless, {size[0]}x{size[1]} terminal ({len(apply_s)} bursts, "
        f"{len(paint_s)} repaints, {rows} rows):"
    )
    report("apply burst (drain inbox)", apply_s)
    report("repaint + render", paint_s)
    p99 = report("apply + repaint + render", cycle_s)
    # Wall time above includes waiting for Textual's next frame (its screen update timer);
    # CPU time is the work itself (this process has no other thread here).
    report("  same, CPU time", cpu_s)
    slow = sorted(when, reverse=True)[:3]
    print("  slowest cycles (ms at s):", ", ".join(f"{c * 1000:.0f}@{t:.1f}" for c, t in slow))
    if warm:
        print(f"  first {WARMUP_S:.0f} s (rows added): max {max(warm) * 1000:.0f} ms")
    report_memory(mem, full_at, table._cell_render_cache.maxsize)
    return p99


def report_memory(
    mem: list[tuple[float, float, int, int]], full_at: float | None, cell_cap: int
) -> None:
    """RSS over time, and its slope before and after the bounded buffers are full."""
    print(f"  memory over time (s, RSS MiB, verdicts kept, table cells cached of {cell_cap}):")
    step = max(1, -(-len(mem) // 15))  # about 15 lines
    for i, (t, r, v, c) in enumerate(mem):
        if i % step == 0 or i == len(mem) - 1:
            print(f"    {t:6.0f}  {r:8.1f}  {v:6d}  {c:6d}")
    if len(mem) < 2:
        print("  memory: too few samples (run longer)")
        return
    pts = [(t, r) for t, r, _, _ in mem]
    if full_at is None:
        print(f"  memory: bounded buffers not all full by {pts[-1][0]:.0f} s "
              f"(verdict feed {mem[-1][2]}, table cells {mem[-1][3]} of {cell_cap}); "
              f"slope {slope_per_min(pts):+.2f} MiB/min ({pts[0][1]:.1f} -> {pts[-1][1]:.1f} "
              "MiB), no steady part: run longer")  # fmt: skip
        return
    start = full_at + MEM_SETTLE_S
    before = [p for p in pts if p[0] <= start]
    steady = [p for p in pts if p[0] >= start]
    print(f"  buffers full at {full_at:.0f} s; steady part from {start:.0f} s")
    print(f"  RSS slope while filling (0-{start:.0f} s): {slope_per_min(before):+6.2f} MiB/min "
          f"({before[0][1]:.1f} -> {before[-1][1]:.1f} MiB)")  # fmt: skip
    if len(steady) < 5 or steady[-1][0] - steady[0][0] < 20:
        print("  RSS slope, steady part: too short to judge (run longer: --seconds 300)")
        return
    slope = slope_per_min(steady)
    rs = [r for _, r in steady]
    print(f"  RSS slope, steady part ({start:.0f}-{steady[-1][0]:.0f} s): {slope:+6.2f} MiB/min "
          f"({rs[0]:.1f} -> {rs[-1]:.1f} MiB, min {min(rs):.1f}, max {max(rs):.1f})")  # fmt: skip
    flat = abs(slope) < FLAT_MIB_PER_MIN
    print(f"  memory {'FLAT' if flat else 'NOT FLAT'}: |slope| {abs(slope):.2f} "
          f"{'<' if flat else '>='} {FLAT_MIB_PER_MIN} MiB/min over the steady part")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0, help="app run length, s (300: memory)")
    p.add_argument("--model-seconds", type=float, default=10.0)
    p.add_argument("--refresh", type=float, default=0.5, help="repaint period, s (app default)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--default-gc", action="store_true", help="skip tune_gc() (for comparison)")
    p.add_argument("--size", default="200x50", help="terminal columns x lines (default 200x50)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    print(
        f"load: {NODES} nodes x {GPUS} GPUs telemetry at 1 Hz + {VERDICTS_PER_S} verdicts/s, "
        f"bursts every {BURST_S * 1000:.0f} ms"
    )
    bench_model(args.model_seconds, rng)
    cols, lines = (int(x) for x in args.size.lower().split("x"))
    p99 = asyncio.run(
        bench_app(args.seconds, args.refresh, rng, not args.default_gc, (cols, lines))
    )
    verdict = "within" if p99 <= TARGET_MS else "OVER"
    print(f"p99 apply+refresh {p99:.1f} ms: {verdict} the {TARGET_MS:.0f} ms target "
          f"(ratio {p99 / TARGET_MS:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
