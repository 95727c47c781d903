"""Slow and surplus clients, handled where uvicorn reads the socket (its httptools protocol, subclassed).

uvicorn closes idle keep-alive connections but has no deadline for a request that is being sent: a client
trickling its headers or body (slowloris) holds a connection forever. Here a request's headers must
arrive within `header_timeout_s` of its first byte and the whole request within `request_timeout_s`, or
it is answered 408 and the connection closed; a connection that sends nothing is closed after
`header_timeout_s`; past `max_connections` open connections a new one is answered 503 `busy` at once.
Headers (or trailers) over `MAX_HEADER_BYTES` are answered 431; an upgrade (or CONNECT), a version
other than HTTP/1.1 and 1.0, or an HTTP/1.1 request without exactly one Host header 400, as is what the
parser rejects: h11, which the service ran on before, had such limits of its own; httptools does not,
and would parse the body of an upgrade request as further requests. With a pipelining client, nothing
is said of a request before the answers to the ones before it: its deadline starts when its turn comes,
and a refusal that cannot wait closes the connection.
A client that stops reading its answers for `write_timeout_s` is dropped: the server would otherwise
wait for the socket to drain forever, holding the connection. Answers use the service's one error schema;
a refused client's input is read and dropped for a moment after the answer (a lingering close), since
closing with input unread makes the kernel reset the connection, destroying the answer before it is
read. Limits come from the environment (`APPAREL_*`), like the app's settings, since uvicorn builds this
protocol in every worker by name.
"""

import asyncio
import functools
from typing import Any, NamedTuple

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from api.errors import ErrorBody, ErrorResponse
from api.observability import REFUSED_WITH
from api.settings import Settings

LINGER_S = 2.0  # how long a refused connection's input is read and dropped before it is closed
# Headers, and apart trailers: h11's limit, which the service had before httptools (which has none).
MAX_HEADER_BYTES = 16 * 1024
REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@functools.cache
def settings_from_env() -> Settings:
    return Settings.from_env()


class Refusal(NamedTuple):
    """An answer in the error schema for the request being read, which still owes its "headers" (no
    cycle of uvicorn's is its own yet) or its "body" (the app may be running it)."""

    owed: str
    status: int
    code: str
    message: str


HEADERS_TOO_LARGE = Refusal(
    "headers", 431, "headers_too_large", f"the request's headers are over {MAX_HEADER_BYTES} bytes"
)
TRAILERS_TOO_LARGE = Refusal(
    "body", 431, "headers_too_large", f"the request's trailers are over {MAX_HEADER_BYTES} bytes"
)


class ServiceProtocol(HttpToolsProtocol):
    """uvicorn's `http` protocol for the service (`api.serve` passes it to every worker by name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = settings_from_env()
        self.deadline: asyncio.TimerHandle | None = None
        self.waiting_for: str | None = None  # "headers" or "body" while a deadline runs
        self.request_started = 0.0  # loop time the deadline counts from (see `watch`)
        self.bytes_seen = False  # since the last whole request (or the connection's start)
        # What the request being read still owes, from the parser's callbacks: "headers" from its first
        # byte, "body" once its headers are complete, None once it is whole (or before any request).
        self.reading: str | None = None
        self.requests_begun = 0
        # Chunked bodies: after the last chunk's header come the trailers (the parser tells the last
        # chunk apart only by the data that does not follow); every chunk callback is counted.
        self.in_trailers = False
        self.chunk_events = 0
        # The size of the block of fields being read (its headers, then apart its trailers), counted two
        # ways, neither above the true size: the fields the parser has delivered, and whole reads that
        # came while the block was incomplete (a field still arriving is held inside the parser, not
        # delivered yet). The body is the app's to count: uvicorn holds at most a buffer of it, and drops
        # what comes after an answer (a 413's).
        self.field_bytes = self.unparsed_bytes = 0
        # Set while parsing a read (from a parser callback), answered once the read is parsed.
        self.refusal: Refusal | None = None
        self.write_deadline: asyncio.TimerHandle | None = None
        self.lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Writing pauses as soon as the socket cannot take a byte, so the write deadline starts when the
        # client stops reading, whatever the size of the answers.
        transport.set_write_buffer_limits(high=0)
        if len(self.connections) > self.limits.max_connections:
            self.refuse(
                503,
                "busy",
                f"the server has {self.limits.max_connections} connections open; retry shortly",
                retry_after=1,
            )
            return
        self.watch()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        self.bytes_seen = True
        reading, begun, chunk_events = self.reading, self.requests_begun, self.chunk_events
        super().data_received(data)
        if self.lingering or self.transport.is_closing():
            return
        if self.refusal is None and (reading, begun) == (self.reading, self.requests_begun):
            # The whole read fell within one part of one request; within its trailers if no chunk began.
            in_trailers = self.in_trailers and chunk_events == self.chunk_events
            self.refusal = self.counted(data, in_trailers)
        if self.refusal is not None:
            self.refuse_request(self.refusal)
            return
        self.watch()

    def counted(self, data: bytes, in_trailers: bool) -> Refusal | None:
        """Count a read that fell within the headers or the trailers of one request: the refusal if the
        block goes past the limit."""
        if self.reading == "headers" or (self.reading == "body" and in_trailers):
            self.unparsed_bytes += len(data)
            if self.unparsed_bytes > MAX_HEADER_BYTES:
                return self.block_too_large()
        return None

    def add_field_bytes(self, size: int) -> None:
        """Count a field the parser delivered (the URL, a header or a trailer)."""
        self.field_bytes += size
        if self.field_bytes > MAX_HEADER_BYTES and self.refusal is None:
            self.refusal = self.block_too_large()

    def block_too_large(self) -> Refusal:
        return HEADERS_TOO_LARGE if self.reading == "headers" else TRAILERS_TOO_LARGE

    def send_400_response(self, msg: str) -> None:
        """A request the parser rejects: answered in the error schema (uvicorn's is plain text), and
        only when no earlier answer is still being written."""
        owed = "body" if self.reading == "body" else "headers"
        invalid = Refusal(owed, 400, "invalid_request", "the request is not valid HTTP/1.1")
        self.refuse_request(self.refusal or invalid)  # a refusal earlier in the read comes first

    def _unsupported_upgrade_warning(self) -> None:
        """Not logged: the service refuses every upgrade itself (`refused_from_headers`); uvicorn would
        log a warning that suggests installing a WebSocket library."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.reading, self.requests_begun, self.bytes_seen = "headers", self.requests_begun + 1, True
        self.field_bytes = self.unparsed_bytes = 0
        self.in_trailers = False
        self.stop_deadline()  # its deadline counts from its first byte (`watch`, after this read)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self.add_field_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        # A trailer, after a chunked body, is dropped, as uvicorn's h11 protocol dropped them (httptools'
        # would add them to the headers the app already has), and capped like headers.
        if self.reading == "headers":
            super().on_header(name, value)
        self.add_field_bytes(len(name) + len(value) + 4)

    def on_chunk_header(self) -> None:
        self.in_trailers, self.chunk_events = True, self.chunk_events + 1

    def on_chunk_complete(self) -> None:
        self.in_trailers, self.chunk_events = False, self.chunk_events + 1

    def on_headers_complete(self) -> None:
        if self.refusal is None:  # once refused, the requests after it in the same read are dropped too
            self.refusal = self.refused_from_headers()
        if self.refusal is None:
            super().on_headers_complete()
            self.reading = "body"
            self.field_bytes = self.unparsed_bytes = 0  # the trailers, if any, are a block of their own

    def refused_from_headers(self) -> Refusal | None:
        """A request refused before it reaches the app. An upgrade (or CONNECT): httptools would skip
        its body and parse that as further requests (the service switches to no other protocol). A
        request without exactly one Host header: invalid in HTTP/1.1, and refused by h11 before."""
        if self.parser.should_upgrade() or self.parser.get_method() == b"CONNECT":
            message = "this service does not switch protocols: send the request without Upgrade"
            return Refusal("headers", 400, "upgrade_not_supported", message)
        version = self.parser.get_http_version()
        if version not in ("1.0", "1.1"):
            return Refusal(
                "headers", 400, "invalid_request", f"HTTP/{version}: only HTTP/1.1 and 1.0 are served"
            )
        hosts = sum(name == b"host" for name, _ in self.headers)
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            message = "an HTTP/1.1 request needs exactly one Host header"
            return Refusal("headers", 400, "invalid_request", message)
        return None

    def on_body(self, body: bytes) -> None:
        self.in_trailers, self.chunk_events = False, self.chunk_events + 1
        if self.reading == "body":  # not for a request refused from its headers: it has no cycle
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.reading == "body":
            super().on_message_complete()
        self.reading, self.bytes_seen = None, False

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.watch()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.write_deadline is None:
            self.write_deadline = self.loop.call_later(self.limits.write_timeout_s, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.write_deadline is not None:
            self.write_deadline.cancel()
            self.write_deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_deadline()
        if self.write_deadline is not None:
            self.write_deadline.cancel()
        super().connection_lost(exc)

    def watch(self) -> None:
        """Run the deadline that fits what the client owes now (see `owed`). While none runs on an idle
        connection, uvicorn's keep-alive timeout does: each read stops it, and uvicorn starts it again
        only when an answer completes (not after a body that came in after its answer, as a 413's)."""
        waiting_for = None if self.transport.is_closing() else self.owed()
        if waiting_for is not None:
            self._unset_keepalive_if_required()  # the deadline governs, not the keep-alive timeout
        if waiting_for == self.waiting_for:
            return
        if self.waiting_for is None:  # counts from now: a new request's from the read of its first byte
            self.request_started = self.loop.time()
        self.stop_deadline()
        self.waiting_for = waiting_for
        if waiting_for is not None:
            limits = self.limits
            seconds = limits.header_timeout_s if waiting_for == "headers" else limits.request_timeout_s
            at = self.request_started + seconds
            self.deadline = self.loop.call_at(at, self.on_deadline, waiting_for, seconds)
        elif self.idle() and self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def owed(self) -> str | None:
        """What the client owes now: the "headers" or "body" of the request being read, "headers" of a
        new connection's first request or after bytes that began none (blank lines), else None: its
        request is whole, or a pipelined one waits for the answer before it (its deadline starts when
        its turn comes)."""
        if self.reading is not None:
            return None if self.earlier_answer_pending(self.reading) else self.reading
        if self.cycle is None or (self.idle() and self.bytes_seen):
            return "headers"
        return None

    def earlier_answer_pending(self, owed: str) -> bool:
        """Whether an earlier request's answer is still to be written (a pipelining client): nothing
        may be said of the request being read, which owes its `owed`, before it. While headers are
        owed, `self.cycle` (uvicorn makes one per request once its headers are read) is the previous
        request's; later ones wait in `self.pipeline`."""
        if self.pipeline:
            return True
        return owed == "headers" and self.cycle is not None and not self.cycle.response_complete

    def idle(self) -> bool:
        """Answered everything, reading nothing."""
        return self.reading is None and self.cycle is not None and self.cycle.response_complete

    def stop_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.waiting_for = None

    def on_deadline(self, waiting_for: str, seconds: float) -> None:
        self.deadline = None
        if waiting_for == "headers" and not self.bytes_seen:
            self.transport.close()  # a connection that never sent a byte gets no answer
            return
        what = "request's headers" if waiting_for == "headers" else "whole request"
        message = f"the {what} did not arrive within {seconds:g} s"
        self.refuse_request(Refusal(waiting_for, 408, "request_timeout", message))

    def refuse_request(self, refusal: Refusal) -> None:
        """Refuse the request being read, unless an answer is already on its way: an earlier request's
        (an error now would be taken for it: the connection is closed) or its own."""
        cycle = self.cycle
        if self.earlier_answer_pending(refusal.owed):
            self.transport.close()
        elif refusal.owed == "body" and cycle is not None and cycle.response_started:
            if cycle.response_complete:
                self.linger()  # answered before its body arrived (a 413, 401 or 429): no second answer
            else:
                self.transport.close()  # too late for an answer: this request's response is under way
        else:
            reading = cycle if refusal.owed == "body" else None
            self.refuse(refusal.status, refusal.code, refusal.message, reading=reading)

    def refuse(
        self,
        status: int,
        code: str,
        message: str,
        retry_after: int | None = None,
        reading: RequestResponseCycle | None = None,
    ) -> None:
        """Answer with the error schema and close: written to the socket directly, since the request
        may not have been read (uvicorn answers only a request it has read). `reading`: the cycle of
        the request refused, when its body was being read (the app is running it)."""
        body = ErrorResponse(error=ErrorBody(code=code, message=message)).model_dump_json().encode()
        reason = REASONS[status]
        headers = [
            b"content-type: application/json",
            b"content-length: " + str(len(body)).encode(),
            b"connection: close",
        ]
        if retry_after is not None:
            headers.append(b"retry-after: " + str(retry_after).encode())
        head = b"HTTP/1.1 %d %s\r\n%s\r\n\r\n" % (status, reason, b"\r\n".join(headers))
        self.transport.write(head + body)
        if reading is not None:  # the app, still reading the body, learns that it was answered
            reading.scope.setdefault("extensions", {})[REFUSED_WITH] = status  # type: ignore[assignment]
            reading.disconnected = True  # and sends nothing after this answer
            reading.waiting_for_100_continue = False  # a "100 Continue" now would follow our EOF
            reading.message_event.set()  # an app waiting for the body learns at once
        self.linger()

    def linger(self) -> None:
        """Close our side, and read and drop what the client still sends until it closes too (asyncio
        then closes the transport) or `LINGER_S` passes."""
        self.stop_deadline()
        self.lingering = True
        self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)
