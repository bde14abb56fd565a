"""Harnesses that drive the real components from outside, for tests, benchmarks and drills:
real agent processes (`spawn`), prover nodes with real engines and chains (`fleet`), wire
messages shaped as the daemon sends them (`synth`), ordinary client load (`load`), real agents
under a challenging daemon (`challenge_fleet`), the kill and fuzz drills (`drills`), a raw
watcher of one agent's sockets that checks its chain and heads (`raw`), and a fake NVML for the
GPU telemetry paths CI cannot run on a real driver (`fakenvml`).

Not part of a deployed component: it sits beside the command line at the top of the layers
(docs/ARCHITECTURE.md), so it may import any component, and none imports it.
"""
