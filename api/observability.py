"""Request ids in logs and headers, and Prometheus metrics by route and status."""

import contextvars
import logging
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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

        self.batch_size = Histogram(
            "prediction_batch_size",
            "Images per forward pass when micro-batching is on",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.feedback = Counter(
            "feedback_total",
            "Feedback received; confirmed=false means the prediction was corrected",
            ["confirmed"],
            registry=self.registry,
        )

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def observe_feedback(self, confirmed: bool) -> None:
        self.feedback.labels(confirmed=str(confirmed).lower()).inc()

    def observe_prediction(self, category: str, confidence: float) -> None:
        self.predictions.labels(category=category).inc()
        self.confidence.observe(confidence)


class Observability:
    """Pure ASGI middleware (cheaper than `BaseHTTPMiddleware`): a request id for every request, in its
    log lines and in the `X-Request-ID` response header; metrics by route template, method and status;
    one access-log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID_HEADER)
        request_id = (given or uuid.uuid4().hex)[:64]
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            # The router stores the matched route in the scope: label by its template, not the raw URL.
            route = getattr(scope.get("route"), "path", "unmatched")
            labels = {"route": route, "method": scope["method"], "status": str(status)}
            self.metrics.requests.labels(**labels).inc()
            self.metrics.latency.labels(**labels).observe(elapsed)
            access_log.info("%s %s -> %d in %.1f ms", scope["method"], scope["path"], status, elapsed * 1000)
            request_id_var.reset(token)
