"""Analysis kernels: pure torch + numpy, no UI, no disk access.

Each paper equation lives in exactly one function whose docstring names it.
"""
