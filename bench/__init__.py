"""Benchmarks of the sync engine (never timed tests): ``make bench``, or one module alone with
``.venv/bin/python -m bench.MODULE --help``. docs/performance.md records the figures."""
