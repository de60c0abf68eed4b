"""The core: the request queue, the batch assembler, the statistics windows and histograms,
compiled (``_core.pyx``) and as a pure-Python twin held equal by tests; ``_backend`` picks one.
"""
