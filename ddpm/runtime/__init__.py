"""The runtime: what every layer needs from the file system and the machine, and nothing of the paper.

- `files`: atomic writes (bytes, text, indented JSON) and files or folders set aside instead of overwritten.
- `provenance`: the version record, the command line that is running, a device's description.
- `devices`: the torch device a request names (`resolve_device`) and waiting for a device's queued work.

The bottom layer: may import the standard library, numpy, torch and `ddpm.__version__` only; every other package
may import it.
"""
