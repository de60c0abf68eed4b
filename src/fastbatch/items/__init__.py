"""What an item is and how a batch of each kind is made and split: intake, lanes, the kind
table, padded batches, oversized splits and results.
"""
