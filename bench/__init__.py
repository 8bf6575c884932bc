"""Benchmarks for boshd: micro-benchmarks (``splitter_cost``, ``validation_cost``) and the load
generator run by ``make bench`` (``python -m bench.run``, see :mod:`bench.run`)."""
