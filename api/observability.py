"""Request ids in logs and headers, and Prometheus metrics by route and status."""

import contextvars
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram

REQUEST_ID_HEADER = "X-Request-ID"
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
access_log = logging.getLogger("api.access")


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every log record, so one request's lines can be found together."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
    )
    logger = logging.getLogger("api")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per app instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["route", "method", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.predictions = Counter(
            "predictions_total", "Predictions by predicted category", ["category"], registry=self.registry
        )
        self.confidence = Histogram(
            "prediction_confidence",
            "Confidence of the predicted category",
            buckets=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
            registry=self.registry,
        )

    def observe_prediction(self, category: str, confidence: float) -> None:
        self.predictions.labels(category=category).inc()
        self.confidence.observe(confidence)


def route_template(request: Request) -> str:
    """The matched route's path template (`/v1/predict`), not the raw URL, to keep label sets small."""
    route = request.scope.get("route")
    return getattr(route, "path", "unmatched")


def observability_middleware(
    metrics: Metrics,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        token = request_id_var.set(request_id[:64])
        started = time.perf_counter()
        try:
            response = await call_next(request)
            elapsed = time.perf_counter() - started
            route = route_template(request)
            labels = {"route": route, "method": request.method, "status": str(response.status_code)}
            metrics.requests.labels(**labels).inc()
            metrics.latency.labels(**labels).observe(elapsed)
            response.headers[REQUEST_ID_HEADER] = request_id_var.get()
            access_log.info(
                "%s %s -> %d in %.1f ms",
                request.method,
                request.url.path,
                response.status_code,
                elapsed * 1000,
            )
            return response
        finally:
            request_id_var.reset(token)

    return middleware
