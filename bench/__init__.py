"""Benchmarks: each duty beside the tool an expert would use instead, in the same run, with the ratio.

Not tests: nothing here asserts a time. `python -m bench [NAME ...]` (or `make bench`) runs them against
the sandbox; each module has a `main(argv)` and prints its own table. Record results in
docs/benchmarks.md together with the command that produced them.
"""
