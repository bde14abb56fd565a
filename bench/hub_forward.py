"""Hub forwarding rate: small commit frames/s through `zmq.proxy` and through fpmon's hub loop.

The same `replay.hub.Hub` sockets (same options, same Curve and ZAP setup) are driven once by
`zmq.proxy_steerable` (what the hub was) and once by the hub's own loop (which reads each
message's Curve `User-Id` and checks the payload's `node` against it). One publisher process
sends pre-encoded commits as fast as it can into the hub's XSUB; one subscriber process counts
what arrives at the XPUB side; the rate is frames received per second, first to last. Whatever
stage is slowest (publisher, hub or subscriber) sets that one; drops at a high-water mark are
reported. The hub's own rate (messages it moved per second, sampled from its counters:
`Hub.stats()`, zmq.proxy's STATISTICS) is printed too. Each is the best of `--repeat` runs (a
shared machine's other load only ever slows a run down). Prints the rates and their ratios,
without and with Curve.

    python bench/hub_forward.py [--n 300000] [--repeat 3] [--modes plain,curve]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq
import zmq.auth

from fpmon.replay.hub import ForwarderConfig, Hub, HubConfig, HubCurveConfig
from fpmon.setups import Setup
from fpmon.wire import Commit, encode

TARGET_RATIO = 0.5
TARGET_RATE = 50_000

PUBLISHER = r"""
import select, sys, time, zmq, zmq.auth
ep, n, keys, server, topic, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], \
    sys.argv[5].encode(), bytes.fromhex(sys.stdin.readline().strip())
ctx = zmq.Context(); s = ctx.socket(zmq.PUB); s.linger = 0
if keys:
    s.curve_publickey, s.curve_secretkey = zmq.auth.load_certificate(keys)
    s.curve_serverkey = server.encode()
s.connect(ep)
while not select.select([sys.stdin], [], [], 0.01)[0]:
    s.send_multipart([b"telemetry", payload])  # warm-up until the subscriber hears us
sys.stdin.readline()
send = s.send_multipart
for _ in range(n):
    send([topic, payload])
time.sleep(2)
"""

SUBSCRIBER = r"""
import sys, time, zmq, zmq.auth
ep, keys, server = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = zmq.Context(); s = ctx.socket(zmq.SUB); s.linger = 0; s.rcvhwm = 0
if keys:
    s.curve_publickey, s.curve_secretkey = zmq.auth.load_certificate(keys)
    s.curve_serverkey = server.encode()
s.subscribe(b"commit"); s.subscribe(b"telemetry"); s.connect(ep)
while s.recv_multipart()[0] != b"telemetry":
    pass
print("warm", flush=True)
recv, got, first, last = s.recv_multipart, 0, 0.0, 0.0
while s.poll(1500):
    if recv()[0] == b"commit":
        last = time.perf_counter()
        first = first or last
        got += 1
print(got, last - first, flush=True)
"""


def commit_payload(node: str) -> bytes:
    c = Commit(
        node=node, t=time.time(), seq=123456, request_id=f"{node}-123456",
        record_digest=bytes(range(32)), chain=bytes(range(32, 64)),
        setup=Setup(dtype="bfloat16", attn_impl="sdpa").to_map(), model="qwen2.5-1.5b",
        prompt_tokens=512, output_tokens=128, prefill_s=0.012, decode_s=0.9,
    )  # fmt: skip
    return encode(c)[1]


def keys(tmp: Path) -> dict[str, Path]:
    for who in ("hub", "replay", "n1", "mon"):
        _, secret = zmq.auth.create_certificates(str(tmp), who)
        os.chmod(secret, 0o600)  # as `fpmon keygen` writes it: fpmon refuses others reading
    for folder, members in (("pubs", ("replay", "n1")), ("subs", ("mon",))):
        (tmp / folder).mkdir()
        for m in members:
            shutil.copy(tmp / f"{m}.key", tmp / folder)
    return {w: tmp / f"{w}.key_secret" for w in ("hub", "n1", "mon")}


def start_hub(cfg: HubConfig, forwarder: str) -> Hub:
    hub = Hub(cfg)
    if forwarder == "fpmon":
        hub.start()
        return hub

    def proxy() -> None:  # the hub as it was: zmq.proxy on the very same sockets
        ctl = hub.ctx.socket(zmq.PAIR)
        ctl.connect(hub._ctl_addr)
        zmq.proxy_steerable(hub.xsub, hub.xpub, None, ctl)
        ctl.close(0)

    hub._thread = threading.Thread(target=proxy, daemon=True)
    hub._thread.start()
    return hub


class HubRate:
    """Messages the hub moved per second while busy, from its own counter sampled every 5 ms."""

    def __init__(self, hub: Hub, forwarder: str) -> None:
        self.hub, self.forwarder = hub, forwarder
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def count(self) -> int:
        if self.forwarder == "fpmon":
            return self.hub.forwarded
        self.hub._ctl.send(b"STATISTICS")  # 8 uint64 frames; [6] = parts sent to the XPUB
        frames = self.hub._ctl.recv_multipart()
        return int.from_bytes(frames[6], sys.byteorder) // 2  # two parts per message

    def _sample(self) -> None:
        while not self.stop.wait(0.005):
            self.samples.append((time.perf_counter(), self.count()))

    def rate(self) -> float:
        self.stop.set()
        self.thread.join()
        s = self.samples
        start = next((i for i in range(1, len(s)) if s[i][1] > s[i - 1][1]), 0)
        end = max((i for i in range(1, len(s)) if s[i][1] > s[i - 1][1]), default=0)
        if end <= start:
            return 0.0
        return (s[end][1] - s[start - 1][1]) / (s[end][0] - s[start - 1][0])


def run(
    cfg: HubConfig, forwarder: str, n: int, k: dict[str, Path] | None
) -> tuple[int, float, float]:
    hub = start_hub(cfg, forwarder)
    server = zmq.auth.load_certificate(str(k["hub"]))[0].decode() if k else ""
    sub = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER, hub.endpoints["xpub"], str(k["mon"]) if k else "",
         server],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    pub = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, hub.endpoints["xsub"], str(n),
         str(k["n1"]) if k else "", server, "commit"],
        stdin=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert pub.stdin and sub.stdout
    pub.stdin.write(commit_payload("n1").hex() + "\n")
    pub.stdin.flush()
    assert sub.stdout.readline().strip() == "warm"
    sampler = HubRate(hub, forwarder)
    time.sleep(0.1)  # warm-up frames still in flight are not the measurement
    sampler.thread.start()
    time.sleep(0.05)
    pub.stdin.write("go\n")
    pub.stdin.flush()
    got, elapsed = sub.stdout.readline().split()
    hub_rate = sampler.rate()
    pub.wait(30)
    sub.wait(30)
    stats = hub.stats() if forwarder == "fpmon" else {}
    hub.stop()
    if stats.get("dropped"):
        print(f"  hub dropped {stats['dropped']}", file=sys.stderr)
    return int(got), float(elapsed), hub_rate


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the best counts")
    ap.add_argument("--modes", default="plain,curve")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fpmon-hub-bench-"))
    k = keys(tmp)
    ok = True
    print(f"{args.n} commit frames of {len(commit_payload('n1'))} B, loopback")
    for mode in args.modes.split(","):
        cfg = HubConfig(hub=ForwarderConfig(xsub="tcp://127.0.0.1:0", xpub="tcp://127.0.0.1:0"))
        if mode == "curve":
            cfg.curve = HubCurveConfig(
                secret_file=k["hub"], publishers_dir=tmp / "pubs", subscribers_dir=tmp / "subs"
            )
        rates, hub_rates = {}, {}
        for forwarder in ("zmq.proxy", "fpmon"):
            runs = [
                run(cfg, forwarder, args.n, k if mode == "curve" else None)
                for _ in range(args.repeat)
            ]
            got, elapsed, _ = max(runs, key=lambda r: r[0] / r[1] if r[1] > 0 else 0.0)
            rates[forwarder] = got / elapsed if elapsed > 0 else 0.0
            hub_rates[forwarder] = max(r[2] for r in runs)
            print(f"{mode:<6} {forwarder:<10} received {rates[forwarder]:>9,.0f} msg/s "
                  f"({args.n - got} of {args.n} dropped at a high-water mark); "
                  f"hub moved {hub_rates[forwarder]:>9,.0f} msg/s")  # fmt: skip
        ratio = rates["fpmon"] / rates["zmq.proxy"] if rates["zmq.proxy"] else 0.0
        hub_ratio = hub_rates["fpmon"] / hub_rates["zmq.proxy"] if hub_rates["zmq.proxy"] else 0.0
        print(f"{mode:<6} fpmon/zmq.proxy: received {ratio:.2f}, hub {hub_ratio:.2f} "
              f"(targets: >= {TARGET_RATIO}, >= {TARGET_RATE:,} msg/s)")  # fmt: skip
        ok &= ratio >= TARGET_RATIO and rates["fpmon"] >= TARGET_RATE
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
