"""Acceptance drills run against a fleet of real processes on loopback.

`procs`: start, SIGKILL and restart the hub, agents and the replay daemon; talk to them.
`kill`: the kill drill (random SIGKILLs under load, then the fleet's invariants).
`fuzz`: the socket fuzz (mutated and hostile frames at every reachable socket).
`report`: the summary tables both print.

`bench/drill_kill.py` and `bench/fuzz_sockets.py` are their command lines; the slow tests
(`tests/functional/test_drill_kill.py`, `test_fuzz_sockets.py`) run the same code, smaller.
"""
