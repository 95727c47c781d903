"""Slow and surplus clients, handled where uvicorn reads the socket (its h11 protocol, subclassed).

uvicorn closes idle keep-alive connections but has no deadline for a request that is being sent: a client
trickling its headers or body (slowloris) holds a connection forever. Here a request's headers must
arrive within `header_timeout_s` of its first byte and the whole request within `request_timeout_s`, or
it is answered 408 and the connection closed; a connection that sends nothing is closed after
`header_timeout_s`; past `max_connections` open connections a new one is answered 503 `busy` at once.
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

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.errors import ErrorBody, ErrorResponse
from api.observability import REFUSED_WITH
from api.settings import Settings

LINGER_S = 2.0  # how long a refused connection's input is read and dropped before it is closed


@functools.cache
def settings_from_env() -> Settings:
    return Settings.from_env()


class ServiceProtocol(H11Protocol):
    """uvicorn's `http` protocol for the service (`api.serve` passes it to every worker by name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = settings_from_env()
        self.deadline: asyncio.TimerHandle | None = None
        self.waiting_for: str | None = None  # "headers" or "body" while a deadline runs
        self.request_started = 0.0  # loop time of the request's first byte (or of the connection)
        self.bytes_seen = False
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
        self.watch()

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
        state = self.conn.their_state
        if self.transport.is_closing():
            waiting_for = None
        elif state is h11.IDLE and (self.bytes_seen or self.cycle is None):
            waiting_for = "headers"
        elif state is h11.SEND_BODY:
            waiting_for = "body"
        else:
            waiting_for = None
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
        if self.cycle is not None and self.cycle.response_started:
            if self.cycle.response_complete:
                self.linger()  # answered before its body arrived (a 413, 401 or 429): no second answer
            else:
                self.transport.close()  # too late for an answer: this request's response is under way
            return
        what = "request's headers" if waiting_for == "headers" else "whole request"
        message = f"the {what} did not arrive within {seconds:g} s"
        self.refuse(408, "request_timeout", message)

    def refuse(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        """Answer with the error schema and close: written to the socket directly, past h11, whose
        state does not allow a response before a request has been read."""
        body = ErrorResponse(error=ErrorBody(code=code, message=message)).model_dump_json().encode()
        reason = {408: b"Request Timeout", 503: b"Service Unavailable"}[status]
        headers = [
            b"content-type: application/json",
            b"content-length: " + str(len(body)).encode(),
            b"connection: close",
        ]
        if retry_after is not None:
            headers.append(b"retry-after: " + str(retry_after).encode())
        head = b"HTTP/1.1 %d %s\r\n%s\r\n\r\n" % (status, reason, b"\r\n".join(headers))
        self.transport.write(head + body)
        if self.cycle is not None:  # the app, still reading the body, learns that it was answered
            self.cycle.scope.setdefault("extensions", {})[REFUSED_WITH] = status  # type: ignore[assignment]
            self.cycle.disconnected = True  # and sends nothing after this answer
            self.cycle.waiting_for_100_continue = False  # a "100 Continue" now would follow our EOF
            self.cycle.message_event.set()  # an app waiting for the body learns at once
        self.linger()

    def linger(self) -> None:
        """Close our side, and read and drop what the client still sends until it closes too (asyncio
        then closes the transport) or `LINGER_S` passes."""
        self.stop_deadline()
        self.lingering = True
        self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)
