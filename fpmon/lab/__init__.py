"""`fpmon lab`: the experiment battery on a GPU and the calibration the verifier loads.

`lab run` measures one machine (repeatability, batch size and composition, attention kernels,
compile, dtype and quantization, concurrent work); `lab compare` sets two machines' results
side by side and writes the noise bands, detection rates and cross matrix.
"""
