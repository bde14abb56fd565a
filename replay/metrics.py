"""Prometheus metrics of the daemon, in its own registry (several daemons per test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.verdicts = Counter(
            "fpmon_replay_verdicts", "Verdicts by status", ["status"], registry=r
        )
        self.alerts = Counter("fpmon_replay_alerts", "Alerts by kind", ["kind"], registry=r)
        self.rejects = Counter(
            "fpmon_replay_rejected_frames", "Frames rejected, by reason", ["reason"], registry=r
        )
        self.shed = Counter(
            "fpmon_replay_shed", "Sampled records not verified: queue full", registry=r
        )
        self.commits = Counter("fpmon_replay_commits", "Commitments checked", ["node"], registry=r)
        self.queue_depth = Gauge(
            "fpmon_replay_queue_depth", "Records waiting for replay", registry=r
        )
        self.openings = Gauge("fpmon_replay_pending_openings", "Openings in flight", registry=r)
        self.coverage = Gauge(
            "fpmon_replay_coverage", "Verified records / commitments", ["node"], registry=r
        )
        self.replay_s = Histogram(
            "fpmon_replay_seconds",
            "Reference replay time per record",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self.latency_s = Histogram(
            "fpmon_replay_commit_to_verdict_seconds",
            "Commitment time to verdict",
            registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 120),
        )

        self.challenges = Counter(
            "fpmon_replay_challenges",
            "Verifier-timed challenges by outcome (sent, answered, judged, over, failed:<why>, "
            "not_judged:<why>)",
            ["outcome"],
            registry=r,
        )
        self.challenge_ratio = Histogram(
            "fpmon_replay_challenge_ratio",
            "Challenge latency (verifier-timed) / reference replay time",
            registry=r,
            buckets=(0.5, 1, 1.5, 2, 3, 5, 10, 30, 100),
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
