"""Prometheus metrics of the server (`GET /metrics`, text format 0.0.4), one registry per app.

Counted in the request path: requests, errors by status, latency histogram and requests in flight per model,
batch sizes. Read from the models when scraped: per-target busy seconds and queue depths of the pipeline,
plan-cache hits, builds and refusals (`Dispatcher.cache_stats`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["Metrics"]

# request latency buckets (s): a tiny model answers in ~1 ms here, ResNet-50 with the ASIC in ~1 s
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class _ModelCollector:
    """Scrape-time figures of every model: what its `stats()` returns."""

    def __init__(self, models: Mapping[str, Any]) -> None:
        self._models = models

    def collect(self) -> Iterator[Any]:
        busy = CounterMetricFamily("dispatch_target_busy_seconds", "Wall seconds each target's worker spent "
                                   "running segments (and the transfers before them).",
                                   labels=["model", "target"])
        steps = CounterMetricFamily("dispatch_target_steps", "Segments each target's worker ran.",
                                    labels=["model", "target"])
        depth = GaugeMetricFamily("dispatch_queue_depth", "Segments waiting in each target's queue.",
                                  labels=["model", "target"])
        hits = CounterMetricFamily("dispatch_plan_cache_hits", "Runs whose input shapes had a plan.",
                                   labels=["model"])
        builds = CounterMetricFamily("dispatch_plan_builds", "Plans built (default, warmed, on demand).",
                                     labels=["model"])
        refused = CounterMetricFamily("dispatch_plan_refused", "Runs refused for an unplanned shape.",
                                      labels=["model"])
        for name, model in self._models.items():
            s = model.stats()
            for t, v in s["busy_s"].items():
                busy.add_metric([name, t], v)
            for t, v in s["steps"].items():
                steps.add_metric([name, t], v)
            for t, v in s["queues"].items():
                depth.add_metric([name, t], v)
            cache = s.get("cache")
            if cache is not None:
                hits.add_metric([name], cache["hits"])
                builds.add_metric([name], cache["builds"])
                refused.add_metric([name], cache["refused"])
        yield from (busy, steps, depth, hits, builds, refused)


class Metrics:
    """The server's metrics; `render()` gives the exposition body and its content type."""

    def __init__(self, models: Mapping[str, Any]) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("dispatch_requests", "Inference requests received.", ["model"], registry=r)
        self.errors = Counter("dispatch_request_errors", "Inference requests answered with an error.",
                              ["model", "code"], registry=r)
        self.latency = Histogram("dispatch_request_latency_seconds", "Inference request latency, from the "
                                 "body read to the response built.", ["model"], buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.in_flight = Gauge("dispatch_requests_in_flight", "Inference requests being answered.", ["model"],
                               registry=r)
        self.batch = Histogram("dispatch_batch_size", "Rows per run submitted (dynamic batching gathers "
                               "them).", ["model"], buckets=BATCH_BUCKETS, registry=r)
        r.register(_ModelCollector(models))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
