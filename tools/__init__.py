"""Host-side tools (CPython): the mock OneNET platform, packaging, deploy, demo, bench.

One entry point: ``python -m tools <command>``; see ``python -m tools --help``.
"""
