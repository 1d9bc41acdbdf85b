"""Studies and tools built on the library: the benchmark against other implementations (`bench`), the options
study of the small preset, the mutation run and the seed sweep of the statistical tests.

The top layer: may import every other package; nothing in the library imports it.
"""
