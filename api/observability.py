"""Request ids in logs and headers, Prometheus metrics by route and status, and the last word on
unexpected errors."""

import asyncio
import contextvars
import logging
import re
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response

REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is echoed and logged, so only a plain token is taken; anything else gets a new one.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Metric labels come from a fixed set: every unknown method or path would otherwise add series for good.
CLIENT_CLOSED_REQUEST = 499
REFUSED_WITH = "apparel.refused_with"  # scope extension: the status the server sent before closing
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
access_log = logging.getLogger("api.access")
logger = logging.getLogger("api")


def loggable(text: str) -> str:
    """`text` on one log line: control characters (newlines, ANSI escapes) and other unprintable ones
    written as escapes, so a request cannot forge or colour log lines."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def request_id_of(scope: Scope) -> str:
    given = Headers(scope=scope).get(REQUEST_ID_HEADER)
    return given if given is not None and REQUEST_ID_PATTERN.fullmatch(given) else uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every log record, so one request's lines can be found together."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        # The process id tells which worker (of `--workers N`) served a request.
        logging.Formatter("%(asctime)s %(levelname)s %(process)d [%(request_id)s] %(name)s: %(message)s")
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
            "Images per forward pass: a /v1/predict request's own, a micro-batch or a /v1/predict/batch call",
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
    one access-log line, with the path as it came on the wire (still percent-encoded) and escaped.

    An unexpected exception ends here: logged once with its traceback, answered with the JSON 500 and the
    request id, on a connection that stays usable. A client that leaves mid-request is counted as 499
    (nginx's "client closed request"), not as an error. A request cut off by the end of the shutdown drain
    gets a 503 `shutting_down` with Retry-After. (Starlette's own last-resort handler sends its 500 and
    then re-raises, so the server logs the traceback again and drops the connection unannounced.)"""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises
        responded = False
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
        path = loggable(scope.get("raw_path", scope["path"].encode()).decode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # The server's shutdown drain ended with this request unfinished: a retryable 503, not the
            # server's plain-text 500.
            if not responded:
                message = "the server is shutting down; retry the request"
                headers = {"Retry-After": "1", "Connection": "close"}
                await error_response(503, "shutting_down", message, headers)(scope, receive, send_with_id)
            raise
        except ClientDisconnect:
            # The client went away mid-request, or the server answered it 408 and closed the connection
            # (api.connections records that status here): nobody to answer, nothing went wrong.
            status = scope.get("extensions", {}).get(REFUSED_WITH, CLIENT_CLOSED_REQUEST)
        except Exception:
            if responded:  # too late for an error response: the server closes the connection
                raise
            logger.exception("unexpected error on %s %s", method, path)
            message = "an unexpected error occurred; it has been logged with this request's id"
            await error_response(500, "internal_error", message)(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            # The router stores the matched route in the scope: label by its template, not the raw URL.
            route = getattr(scope.get("route"), "path", "unmatched")
            labels = {"route": route, "method": method, "status": str(status)}
            self.metrics.requests.labels(**labels).inc()
            self.metrics.latency.labels(**labels).observe(elapsed)
            access_log.info("%s %s -> %d in %.1f ms", loggable(scope["method"]), path, status, elapsed * 1000)
            request_id_var.reset(token)
