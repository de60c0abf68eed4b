"""The runtime of a run: its workers, the batch they run, the scheduler that decides when a
batch leaves, deadlines, health, and the threads it starts.
"""
