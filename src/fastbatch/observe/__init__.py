"""What is counted and reported: totals, statistics windows, histograms and the Prometheus
exporter.
"""
