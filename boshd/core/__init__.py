"""The pure session core: standard library only, no I/O, every input takes ``now``.

Nothing in this package imports asyncio, aiohttp or lxml; ``tests/unit/test_layers.py``
checks that in a fresh interpreter.
"""
