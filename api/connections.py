"""Slow and surplus clients, handled where uvicorn reads the socket (its httptools protocol, subclassed).

uvicorn closes idle keep-alive connections but has no deadline for a request that is being sent: a client
trickling its headers or body (slowloris) holds a connection forever. Here a request's headers must
arrive within `header_timeout_s` of its first byte and the whole request within `request_timeout_s`, or
it is answered 408 and the connection closed; a connection that sends nothing is closed after
`header_timeout_s`; past `max_connections` open connections a new one is answered 503 `busy` at once.
Headers over `MAX_HEADER_BYTES` are answered 431 (httptools, unlike h11, has no limit of its own).
A client that stops reading its answers for `write_timeout_s` is dropped: the server would otherwise
wait for the socket to drain forever, holding the connection. Answers use the service's one error schema;
a refused client's input is read and dropped for a moment after the answer (a lingering close), since
closing with input unread makes the kernel reset the connection, destroying the answer before it is
read. Limits come from the environment (`APPAREL_*`), like the app's settings, since uvicorn builds this
protocol in every worker by name.
"""

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from api.errors import ErrorBody, ErrorResponse
from api.observability import REFUSED_WITH
from api.settings import Settings

LINGER_S = 2.0  # how long a refused connection's input is read and dropped before it is closed
MAX_HEADER_BYTES = 16 * 1024  # h11's limit, which the service had before httptools
REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


@functools.cache
def settings_from_env() -> Settings:
    return Settings.from_env()


class ServiceProtocol(HttpToolsProtocol):
    """uvicorn's `http` protocol for the service (`api.serve` passes it to every worker by name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = settings_from_env()
        self.deadline: asyncio.TimerHandle | None = None
        self.waiting_for: str | None = None  # "headers" or "body" while a deadline runs
        self.request_started = 0.0  # loop time of the request's first byte (or of the connection)
        self.bytes_seen = False
        # What the request being read still owes, from the parser's callbacks: "headers" from its first
        # byte, "body" once its headers are complete, None once it is whole (or before any request).
        self.reading: str | None = None
        self.header_bytes = 0  # received while this request's headers were incomplete
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
        super().data_received(data)
        if self.reading == "headers" and not self.transport.is_closing():
            self.header_bytes += len(data)
            if self.header_bytes > MAX_HEADER_BYTES:
                message = f"the request's headers are over {MAX_HEADER_BYTES} bytes"
                self.refuse_request("headers", 431, "headers_too_large", message)
                return
        self.watch()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.reading, self.header_bytes = "headers", 0

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.reading = "body"

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.reading = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.bytes_seen = False  # uvicorn's keep-alive timeout takes over while the connection is idle
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
        """Run the deadline that fits what the client still owes: headers, the body, or nothing."""
        if self.transport.is_closing():
            waiting_for = None
        elif self.reading is None and self.cycle is None:
            waiting_for = "headers"  # a new connection owes its first request
        else:
            waiting_for = self.reading
        if waiting_for == self.waiting_for:
            return
        if self.waiting_for is None:  # a new request has begun: its deadlines count from now
            self.request_started = self.loop.time()
        self.stop_deadline()
        self.waiting_for = waiting_for
        if waiting_for is not None:
            limits = self.limits
            seconds = limits.header_timeout_s if waiting_for == "headers" else limits.request_timeout_s
            at = self.request_started + seconds
            self.deadline = self.loop.call_at(at, self.on_deadline, waiting_for, seconds)

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
        self.refuse_request(waiting_for, 408, "request_timeout", message)

    def refuse_request(self, owed: str, status: int, code: str, message: str) -> None:
        """Refuse the request being read, which still owes its "headers" or "body", unless an answer
        is already on its way. While headers are owed, `self.cycle` (uvicorn makes one per request
        once its headers are read) is the previous request's: if that answer is not complete yet (a
        pipelining client), an error now would be taken for it, so the connection is just closed."""
        cycle = self.cycle
        if owed == "headers" and cycle is not None and not cycle.response_complete:
            self.transport.close()
        elif owed == "body" and cycle is not None and cycle.response_started:
            if cycle.response_complete:
                self.linger()  # answered before its body arrived (a 413, 401 or 429): no second answer
            else:
                self.transport.close()  # too late for an answer: this request's response is under way
        else:
            self.refuse(status, code, message, reading=cycle if owed == "body" else None)

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
