"""fpmon core: setups, records, probes, wire schema, engines and comparison.

Both sides of the protocol (the untrusted node and the trusted verifier) import this package,
so the verifier extracts exactly what the prover extracted.
"""

__version__ = "0.1.0"
