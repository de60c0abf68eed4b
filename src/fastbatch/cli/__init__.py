"""The command line: the demo, the benchmarks launcher and progress output.
"""
