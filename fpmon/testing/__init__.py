"""Harnesses that drive the real components from outside, for tests, benchmarks and drills:
real agent processes (`spawn`), prover nodes with real engines and chains (`fleet`), wire
messages shaped as the daemon sends them (`synth`), ordinary client load (`load`), real agents
under a challenging daemon (`challenge_fleet`), and the kill and fuzz drills (`drills`).

Not part of a deployed component: it sits beside the command line at the top of the layers
(docs/ARCHITECTURE.md), so it may import any component, and none imports it.
"""
