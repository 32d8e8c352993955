"""Prometheus metrics: requests, tokens and latency per model; adapter loads, unloads and load time; admission
(queue depth, waiting requests and engine slots held per model, waiting time, rejections by reason)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("palate_requests", "Requests by model, endpoint and outcome",
                                ["model", "endpoint", "status"], registry=self.registry)
        self.tokens = Counter("palate_tokens", "Tokens by model and kind (prompt|completion)",
                              ["model", "kind"], registry=self.registry)
        self.latency = Histogram("palate_request_latency_seconds", "End-to-end request latency by model",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("palate_time_to_first_token_seconds", "Time to first token by model",
                              ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.adapter_loads = Counter("palate_adapter_loads", "Adapter versions loaded", ["adapter"],
                                     registry=self.registry)
        self.adapter_unloads = Counter("palate_adapter_unloads", "Adapter versions unloaded", ["adapter"],
                                       registry=self.registry)
        self.adapter_load_seconds = Histogram("palate_adapter_load_seconds", "Time to load an adapter version",
                                              buckets=LATENCY_BUCKETS, registry=self.registry)

        self.queue_depth = Gauge("palate_admission_queue_depth", "Requests waiting for an engine slot, all models",
                                 registry=self.registry)
        self.waiting = Gauge("palate_admission_waiting", "Requests waiting for an engine slot, by model ('arena': "
                             "battles, whose contestants are drawn once admitted)", ["model"], registry=self.registry)
        self.active_slots = Gauge("palate_admission_active_slots", "Engine slots (sequences) held by admitted "
                                  "requests, by model", ["model"], registry=self.registry)
        self.wait_seconds = Histogram("palate_admission_wait_seconds", "Time from arrival to admission by endpoint",
                                      ["endpoint"], buckets=(0.01,) + LATENCY_BUCKETS, registry=self.registry)
        self.rejections = Counter("palate_admission_rejections", "Requests refused by admission (429) by endpoint "
                                  "and reason", ["endpoint", "reason"], registry=self.registry)

    def admission_waiting(self, model: str, change: int) -> None:
        self.queue_depth.inc(change)
        self.waiting.labels(model).inc(change)

    def admission_granted(self, model: str, endpoint: str, slots: int, waited_s: float) -> None:
        self.active_slots.labels(model).inc(slots)
        self.wait_seconds.labels(endpoint).observe(waited_s)

    def admission_released(self, model: str, slots: int) -> None:
        self.active_slots.labels(model).dec(slots)

    def admission_rejected(self, endpoint: str, reason: str) -> None:
        self.rejections.labels(endpoint, reason).inc()

    def request_done(self, model: str, endpoint: str, status: str, prompt_tokens: int, completion_tokens: int,
                     latency_s: float, ttft_s: float | None) -> None:
        self.requests.labels(model, endpoint, status).inc()
        self.tokens.labels(model, "prompt").inc(prompt_tokens)
        self.tokens.labels(model, "completion").inc(completion_tokens)
        self.latency.labels(model).observe(latency_s)
        if ttft_s is not None:
            self.ttft.labels(model).observe(ttft_s)

    def adapter_loaded(self, ref: str, seconds: float) -> None:
        self.adapter_loads.labels(ref).inc()
        self.adapter_load_seconds.observe(seconds)

    def adapter_unloaded(self, ref: str) -> None:
        self.adapter_unloads.labels(ref).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
