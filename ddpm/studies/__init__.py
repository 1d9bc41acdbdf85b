"""Studies and tools built on the library: the benchmark against other implementations (`bench`), the options
study of the small preset, the mutation run, the seed sweep of the statistical tests and the power of the conformance
suite's statistical cases (`conformance_power`), and the GPU check for a lent GPU machine with its report assembled
back here (`gpu_check`).

The top layer: may import every other package; nothing in the library imports it.
"""
