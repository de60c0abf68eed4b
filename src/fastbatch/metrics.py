"""Prometheus metrics for fastbatch processors (``pip install 'fastbatch[prometheus]'``).

Import this module only where you export metrics: it imports ``prometheus_client``.

Example::

    import fastbatch.metrics
    from prometheus_client import start_http_server

    fastbatch.metrics.register(processor)        # on prometheus_client.REGISTRY
    start_http_server(9100)
"""

from .observe._metrics import PrometheusCollector, register

__all__ = ["PrometheusCollector", "register"]
