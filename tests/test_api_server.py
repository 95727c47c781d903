"""The service as it is deployed: a real uvicorn process on a loopback port, probed over HTTP."""

import asyncio
import functools
import io
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import httpx2 as httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, Request
from PIL import Image

import api.connections
import api.limits
from api.app import create_app
from api.connections import ServiceProtocol
from api.errors import ApiError
from api.feedback_store import FeedbackStore
from api.limits import DecodeSlots
from api.settings import Settings
from support import hostile_uploads
from support.local_server import LiveServer
from support.product_photos import product_photo
from text_recognizer.datasets.idx import read_idx
from text_recognizer.preprocessing import decoded_pixels

from .conftest import FIXTURES_DIR
from .test_photo_preprocessing import bomb_png, truncated_jpeg

pytestmark = pytest.mark.usefixtures("serving_fixture_model")  # not the shipped model

TEST_IMAGES = read_idx(FIXTURES_DIR / "t10k-images-idx3-ubyte.gz").numpy()
SERVED_FEEDBACK = re.compile(r"INFO (\d+) \[[^]]*\] api.access: POST /v1/feedback -> 201")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer.start(
        tmp_path_factory.mktemp("server") / "server.log", env={"APPAREL_MAX_UPLOAD_BYTES": "300000"}
    )
    yield live
    live.stop()


def test_serves_predictions_and_survives_bad_input(server: LiveServer, serving_fixture_model: Path) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/health/live").json() == {"status": "ok"}
        bad_uploads = [
            b"",
            b"GIF89a but not really",
            truncated_jpeg(),
            bomb_png(60_000, 60_000),
            b"\x00" * 400_000,
        ]
        for data in bad_uploads:
            response = client.post("/v1/predict", files={"file": ("x.jpg", data)})
            assert 400 <= response.status_code < 500 and "error" in response.json()
        response = client.post(
            "/v1/predict", files={"file": ("shoe.jpg", product_photo(TEST_IMAGES[0], seed=0))}
        )
        assert response.status_code == 200 and response.json()["category"] == "Ankle boot"
        ready = client.get("/health/ready")
        assert ready.status_code == 200 and "server" not in ready.headers
        card = json.loads(serving_fixture_model.with_name("model_card.json").read_text())
        assert ready.json()["model_version"] == card["version"], "the server is not serving the fixture model"
        request_id = client.get("/health/live", headers={"X-Request-ID": "probe-42"}).headers["X-Request-ID"]
    assert request_id == "probe-42"
    # The access line is written just after the response is sent: allow the server a moment.
    deadline = time.monotonic() + 30
    while "[probe-42]" not in server.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "[probe-42]" in server.log_path.read_text()


def test_a_burst_of_large_images_waits_for_a_decoder_or_gets_503_busy(tmp_path: Path) -> None:
    """One decoder and 50 ms of patience: of 8 simultaneous 3000x3000 PNGs (each ~0.1 s to decode) some
    are answered and the rest get a 503 `busy` with Retry-After; nothing else fails and the server lives."""
    env = {"APPAREL_MAX_CONCURRENT_DECODES": "1", "APPAREL_DECODE_WAIT_S": "0.05"}
    live = LiveServer.start(tmp_path / "server.log", env=env)
    large = encode_png(Image.new("RGB", (3000, 3000), "white"), TEST_IMAGES[0])
    try:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
                posts = [client.post("/v1/predict", files={"file": ("big.png", large)}) for _ in range(8)]
                return list(await asyncio.gather(*posts))

        responses = asyncio.run(burst())
        statuses = sorted(response.status_code for response in responses)
        assert set(statuses) == {200, 503}, statuses
        busy = [response for response in responses if response.status_code == 503]
        assert all(r.json()["error"]["code"] == "busy" and r.headers["Retry-After"] == "1" for r in busy)
        assert httpx.get(live.url + "/health/live").status_code == 200
    finally:
        live.stop()


def encode_png(canvas: Image.Image, item: np.ndarray) -> bytes:
    """A large white PNG with a Fashion-MNIST item pasted in its middle."""
    canvas.paste(Image.fromarray(255 - item).resize((1000, 1000)), (1000, 1000))
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()


@contextmanager
def serving_in_thread(app: FastAPI, http: type[asyncio.Protocol] | str = "auto") -> Iterator[tuple[str, int]]:
    """A real uvicorn server for an app built here (with a route added for the test), on a port it
    chooses itself; `http`: uvicorn's protocol class (the service's own, for one)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="info", http=http))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield "127.0.0.1", server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def read_response(reader: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    status = int(reader.readline().split()[1])
    headers = {}
    while (line := reader.readline().decode("latin-1").strip()) != "":
        name, value = line.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    return status, headers, reader.read(int(headers["content-length"]))


def test_an_unexpected_error_is_one_json_500_on_a_connection_that_stays_usable(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Before: the 500 came without X-Request-ID, the traceback was logged twice, and the connection was
    closed unannounced, so a client's next request on it failed."""
    app = create_app(Settings())

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with serving_in_thread(app) as address, socket.create_connection(address, timeout=30) as connection:
        stream = connection.makefile("rb")
        connection.sendall(b"GET /boom HTTP/1.1\r\nHost: test\r\nX-Request-ID: bug-1\r\n\r\n")
        status, headers, body = read_response(stream)
        assert status == 500 and headers["x-request-id"] == "bug-1"
        assert json.loads(body)["error"]["code"] == "internal_error"
        assert headers.get("connection", "keep-alive") != "close"
        connection.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        assert read_response(stream)[0] == 200, "the same connection serves the next request"
    log = capfd.readouterr().err
    assert log.count("Traceback (most recent call last)") == 1 and "RuntimeError: a bug" in log
    assert "[bug-1] api: unexpected error on GET /boom" in log


def test_a_request_cut_off_by_the_shutdown_drain_gets_a_retryable_503(tmp_path: Path) -> None:
    """A request still running when the 10 s drain ends (here: a body that stops arriving) used to get
    the server's plain-text 500."""
    live = LiveServer.start(tmp_path / "server.log")
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        head = b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n"
        connection.sendall(head + b"\r\n" + b"\xff" * 10)
        time.sleep(0.5)
        live.process.send_signal(signal.SIGTERM)
        status, headers, body = read_response(connection.makefile("rb"))
    assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "shutting_down" and "x-request-id" in headers
    assert live.stop() in (0, -signal.SIGTERM)


def test_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    live = LiveServer.start(tmp_path / "server.log")
    # uvicorn shuts down, then re-raises the signal so the exit status reports it.
    assert live.stop() in (0, -signal.SIGTERM)
    log = live.log_path.read_text()
    assert "Application shutdown complete" in log and "Finished server process" in log


def test_two_workers_behind_one_port_share_the_feedback_database(tmp_path: Path) -> None:
    """Both workers store feedback in the one database. Before, the test also passed when one worker
    served every request: now waves of concurrent requests go on until the access log shows both."""
    feedback = tmp_path / "feedback"
    env = {"APPAREL_FEEDBACK_DIR": str(feedback), "APPAREL_BATCH_WAIT_MS": "3"}
    env["APPAREL_FEEDBACK_PER_MINUTE"] = "0"  # every wave comes from one address (found in review)
    live = LiveServer.start(tmp_path / "server.log", "--workers", "2", env=env)
    served_by: set[str] = set()
    stored = 0
    try:
        deadline = time.monotonic() + 120
        while live.log_path.read_text().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, live.log_path.read_text()
            time.sleep(0.2)

        async def send_wave(wave: int) -> list[httpx.Response]:
            photos = [product_photo(TEST_IMAGES[i], seed=1000 * wave + i) for i in range(16)]
            async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
                predictions = [client.post("/v1/predict", files={"file": ("p.jpg", p)}) for p in photos]
                feedback_posts = [
                    client.post("/v1/feedback", files={"file": ("p.jpg", p)}, data={"confirm": "true"})
                    for p in photos
                ]
                return list(await asyncio.gather(*predictions, *feedback_posts))

        for wave in range(10):
            responses = asyncio.run(send_wave(wave))
            assert [r.status_code for r in responses] == [200] * 16 + [201] * 16
            stored += 16
            served_by = set(SERVED_FEEDBACK.findall(live.log_path.read_text()))
            if len(served_by) >= 2:
                break
    finally:
        live.stop()
    assert len(served_by) == 2, f"feedback served by the worker processes {served_by}"
    assert [record.id for record in FeedbackStore.at(feedback).all()] == list(range(1, stored + 1))


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The deployed server with short deadlines for slow clients and room for three connections."""
    env = {"APPAREL_HEADER_TIMEOUT_S": "1", "APPAREL_REQUEST_TIMEOUT_S": "1.5"}
    env |= {"APPAREL_WRITE_TIMEOUT_S": "1", "APPAREL_MAX_CONNECTIONS": "3"}
    live = LiveServer.start(tmp_path_factory.mktemp("impatient") / "server.log", env=env)
    yield live
    live.stop()


LIVE = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
PREDICT_PNG = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"  # headers to follow


def connect(server: LiveServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=10)
    return connection


def answer_and_close(connection: socket.socket) -> tuple[float, bytes]:
    """Seconds until the server closed the connection, and everything it sent before."""
    start, received = time.monotonic(), b""
    while chunk := connection.recv(65536):
        received += chunk
    return time.monotonic() - start, received


@pytest.mark.parametrize(
    ("sent", "owed"),
    [
        (b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ", "headers"),
        (
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n"
            + b"\x89PNG",
            "body",
        ),
    ],
    ids=["slow headers", "short body"],
)
def test_a_request_that_does_not_arrive_in_time_gets_408_and_is_closed(
    impatient_server: LiveServer, sent: bytes, owed: str
) -> None:
    """Before: slow headers, a slow body and a short Content-Length held their connections open for
    more than 75 s."""
    with connect(impatient_server) as connection:
        connection.sendall(sent)
        waited, received = answer_and_close(connection)
    assert waited < 4, f"closed after {waited:.1f} s"
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower()
    assert json.loads(body)["error"] == {
        "code": "request_timeout",
        "message": {
            "headers": "the request's headers did not arrive within 1 s",
            "body": "the whole request did not arrive within 1.5 s",
        }[owed],
    }
    metrics = httpx.get(impatient_server.url + "/metrics").text
    assert 'status="500"' not in metrics and "Traceback" not in impatient_server.log_path.read_text()
    if owed == "body":  # the app was reading it: counted as what the client got
        assert 'route="/v1/predict",status="408"} 1.0' in metrics


def only_answer(received: bytes) -> tuple[bytes, dict[str, Any]]:
    """The status line and JSON body of the one answer in `received`, which must close the connection."""
    head, _, body = received.partition(b"\r\n\r\n")
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", received)) == 1, received[:300]
    assert b"connection: close" in head.lower()
    return head.split(b"\r\n")[0], json.loads(body)


def test_slow_headers_on_a_keep_alive_connection_get_408_too(impatient_server: LiveServer) -> None:
    """Found porting to httptools: on a connection that had been answered before, slow headers were
    taken for that finished request's and the connection was closed without an answer."""
    with connect(impatient_server) as connection, connection.makefile("rb") as reader:
        connection.sendall(LIVE)
        assert read_response(reader)[0] == 200
        connection.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        status, headers, body = read_response(reader)
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body)["error"]["message"] == "the request's headers did not arrive within 1 s"
    assert 0.8 < time.monotonic() - started < 3  # from this request's first byte, not the connection's


def test_blank_lines_after_an_answer_do_not_hold_the_connection(impatient_server: LiveServer) -> None:
    """Found in review of the httptools port: a blank line after an answer begins no request, but it
    stopped uvicorn's keep-alive timeout, and no deadline ran: the client held its connection forever
    (here the socket's 10 s timeout)."""
    with connect(impatient_server) as connection, connection.makefile("rb") as reader:
        connection.sendall(LIVE)
        assert read_response(reader)[0] == 200
        connection.sendall(b"\r\n")
        status, _, body = read_response(reader)
    assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"


def test_a_body_that_follows_its_413_leaves_the_connection_to_the_keep_alive_timeout(
    impatient_server: LiveServer,
) -> None:
    """Found in review of the httptools port: a body sent whole after its early 413 stopped uvicorn's
    keep-alive timeout (every read does), and once it was whole no deadline ran: held forever."""
    size = 11 * 1024 * 1024  # over the upload limit (10 MB, and room for multipart)
    with connect(impatient_server) as connection, connection.makefile("rb") as reader:
        connection.sendall(PREDICT_PNG + b"Content-Length: %d\r\n\r\n" % size)
        assert read_response(reader)[0] == 413  # the whole answer (one recv may hold only its head)
        connection.sendall(b"\0" * size)
        waited, received = answer_and_close(connection)
    # uvicorn's keep-alive timeout (5 s) closed it, not the request deadline (1.5 s) and a linger (2 s)
    assert received == b"" and 4 < waited < 8


def test_an_early_answer_leaves_the_rest_of_its_body_to_the_request_deadline(server: LiveServer) -> None:
    """Found in review: after an early answer (a 413 from Content-Length) uvicorn's keep-alive timeout
    (5 s) ran beside the request's deadline (30 s) and cut a client pausing in its body; the body sent,
    the connection serves the next request."""
    size = 400_000  # over this server's upload limit
    with connect(server) as connection, connection.makefile("rb") as reader:
        connection.sendall(PREDICT_PNG + b"Content-Length: %d\r\n\r\n" % size)
        assert read_response(reader)[0] == 413
        time.sleep(6)  # then the body it still owes, and another request
        connection.sendall(b"\0" * size + LIVE)
        assert read_response(reader)[0] == 200


@pytest.mark.parametrize("one_read", [True, False], ids=["in one read", "in reads of their own"])
def test_headers_past_the_limit_get_431_and_the_connection_is_closed(
    impatient_server: LiveServer, one_read: bool
) -> None:
    """Headers are capped as h11 capped them (16 KB), in the service's error schema, whether they
    arrive whole or a field at a time (httptools holds an incomplete field itself). Before (h11): a
    plain-text 400, the connection closed mid-send."""
    padding = [b"X-Padding-%d: " % i + b"a" * 8180 + b"\r\n" for i in range(16)]
    with connect(impatient_server) as connection:
        connection.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        if one_read:
            connection.sendall(b"".join(padding) + b"\r\n")
        for field in [] if one_read else padding:  # none of these reads completes the headers
            connection.sendall(field)
            time.sleep(0.03)  # more than 16 KB in whole reads, even if the first takes half of them
        waited, received = answer_and_close(connection)
    status, body = only_answer(received)
    assert status.startswith(b"HTTP/1.1 431 ") and waited < 4
    assert body["error"] == {
        "code": "headers_too_large",
        "message": "the request's headers are over 16384 bytes",
    }
    assert httpx.get(impatient_server.url + "/health/live").status_code == 200


def test_trailers_are_capped_like_headers(impatient_server: LiveServer) -> None:
    """Found in review of the httptools port: trailers after a chunked body had no limit (httptools
    passes each to uvicorn, which appended it to the request's headers)."""
    trailers = b"".join(b"X-Trailer-%d: " % i + b"a" * 100 + b"\r\n" for i in range(200))
    with connect(impatient_server) as connection:
        connection.sendall(
            PREDICT_PNG + b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n" + trailers + b"\r\n"
        )
        _, received = answer_and_close(connection)
    status, body = only_answer(received)
    assert status.startswith(b"HTTP/1.1 431 ")
    assert body["error"]["message"] == "the request's trailers are over 16384 bytes"


def test_a_trailer_still_arriving_is_capped_too(impatient_server: LiveServer) -> None:
    """Found in review: a trailer field still arriving is held inside the parser, growing with each
    read (at a cost growing with its square), and was counted only as body bytes (2 x 10 MB here);
    the request deadline (1.5 s, a 408) would have ended it first."""
    with connect(impatient_server) as connection:
        connection.sendall(PREDICT_PNG + b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\nX-Trailer: ")
        for _ in range(16):  # never ends the field
            time.sleep(0.03)
            connection.sendall(b"a" * 4096)
        _, received = answer_and_close(connection)
    status, body = only_answer(received)
    assert status.startswith(b"HTTP/1.1 431 ")
    assert body["error"]["message"] == "the request's trailers are over 16384 bytes"


def test_a_pipelined_request_whose_headers_stall_gets_its_408(impatient_server: LiveServer) -> None:
    """Found in review: a request begun in the read that finished the one before it was not counted as
    bytes sent, and its stalled headers got a silent close instead of the 408."""
    with connect(impatient_server) as connection, connection.makefile("rb") as reader:
        connection.sendall(LIVE + b"GET /health/live HTTP/1.1\r\nHo")
        assert read_response(reader)[0] == 200
        status, _, body = read_response(reader)
    assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"


def test_a_batch_larger_than_twice_one_upload_is_served(server: LiveServer) -> None:
    """Found in review: a cap on a body's bytes on the wire at twice the single-upload limit (300,000
    bytes here) refused a batch of files each under it (a batch may carry 16 of them)."""
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    assert 200_000 < len(buffer.getvalue()) < 300_000
    files = [("files", (f"{i}.png", buffer.getvalue(), "image/png")) for i in range(8)]
    response = httpx.post(server.url + "/v1/predict/batch", files=files, timeout=60)
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 8


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        (b"GET /health/live HTTP/1.1\r\n\r\n", "invalid_request"),
        (b"GET /health/live HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "invalid_request"),
        (b"GET /health/live HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", "invalid_request"),
        (
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
            b"Content-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(LIVE) + LIVE,
            "upgrade_not_supported",
        ),
        (b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n" + LIVE, "upgrade_not_supported"),
        (b"GET /health/live HTTP/2.0\r\nHost: x\r\n\r\n", "invalid_request"),
    ],
    ids=["no Host", "two Hosts", "malformed", "upgrade with a body", "CONNECT", "HTTP/2.0"],
)
def test_requests_the_service_does_not_take_get_one_400_and_reach_no_route(
    impatient_server: LiveServer, sent: bytes, code: str
) -> None:
    """Found in review of the httptools port: an upgrade request's body was skipped and parsed as
    further requests (here a smuggled GET, answered 200), and a request without a Host header was
    served (h11 refused it); the parser's own 400 was plain text."""
    with connect(impatient_server) as connection:
        connection.sendall(sent)
        _, received = answer_and_close(connection)
    status, body = only_answer(received)
    assert status.startswith(b"HTTP/1.1 400 ") and body["error"]["code"] == code


def test_a_pipelined_request_is_refused_only_after_the_answer_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review of the httptools port: the body deadline of a pipelined request ran while the
    request before it was still in the app, and its 408 went out first, taken for that answer."""
    monkeypatch.setenv("APPAREL_REQUEST_TIMEOUT_S", "1.5")
    api.connections.settings_from_env.cache_clear()
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(2.5)
        return {"status": "done"}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    pipelined = (
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"  # 7 bytes short
    )
    try:
        with (
            serving_in_thread(app, http=ServiceProtocol) as address,
            socket.create_connection(address, timeout=10) as connection,
            connection.makefile("rb") as reader,
        ):
            connection.sendall(pipelined)
            started = time.monotonic()
            first = read_response(reader)
            status, _, body = read_response(reader)
            waited = time.monotonic() - started
    finally:
        api.connections.settings_from_env.cache_clear()
    assert (first[0], json.loads(first[2])) == (200, {"status": "done"})
    assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"
    assert waited > 3.5  # its deadline started when its turn came: 2.5 s, then 1.5 s


def test_a_request_answered_before_its_body_gets_no_second_answer(impatient_server: LiveServer) -> None:
    """Found in review: a request refused from its headers (here a 413 from Content-Length) left the
    client owing its body, and when the deadline passed the server wrote a 408 after the 413."""
    with connect(impatient_server) as connection:
        connection.sendall(PREDICT_PNG + b"Content-Length: 99999999\r\n\r\n")
        waited, received = answer_and_close(connection)
    assert received.startswith(b"HTTP/1.1 413 ") and received.count(b"HTTP/1.1 ") == 1, received
    assert waited < 5


def test_a_client_that_leaves_mid_upload_is_counted_499_not_an_error(tmp_path: Path) -> None:
    """Before: a client closing its connection during an upload was logged as an unexpected error with
    a traceback and counted as a 500."""
    live = LiveServer.start(tmp_path / "server.log")
    try:
        with connect(live) as connection:
            connection.sendall(PREDICT_PNG + b"Content-Length: 5000\r\n\r\n\x89PNG")
            time.sleep(0.3)
        deadline = time.monotonic() + 30
        while 'status="499"' not in (metrics := httpx.get(live.url + "/metrics").text):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.1)
        assert 'route="/v1/predict",status="499"} 1.0' in metrics and 'status="500"' not in metrics
        assert "ERROR" not in live.log_path.read_text()
    finally:
        live.stop()


def test_a_connection_that_sends_nothing_is_closed_silently(impatient_server: LiveServer) -> None:
    with connect(impatient_server) as connection:
        waited, received = answer_and_close(connection)
    assert received == b"" and waited < 4


def test_a_client_that_keeps_its_connection_between_requests_is_not_cut_off(
    impatient_server: LiveServer,
) -> None:
    """The deadlines run while a request is being sent, not while the client thinks: a pause shorter
    than uvicorn's keep-alive (5 s) but longer than the header deadline is fine."""
    with httpx.Client(base_url=impatient_server.url, timeout=10) as client:
        assert client.get("/health/live").status_code == 200
        time.sleep(2)
        assert client.get("/health/live").status_code == 200


def test_uploads_on_an_old_keep_alive_connection_get_their_own_deadline(
    impatient_server: LiveServer,
) -> None:
    """Found in review: a request whose headers came in one read kept the connection's start as its
    own, so an upload on a keep-alive connection older than the deadline got an instant 408."""
    photo = product_photo(TEST_IMAGES[0], seed=0, image_format="PNG")
    headers = PREDICT_PNG + b"Content-Length: %d\r\n\r\n" % len(photo)
    with connect(impatient_server) as connection, connection.makefile("rb") as reader:
        connection.sendall(LIVE)
        assert read_response(reader)[0] == 200
        time.sleep(2)  # the connection is now older than the 1.5 s request deadline
        connection.sendall(headers)
        time.sleep(0.3)  # the body follows the headers in another read
        connection.sendall(photo)
        status, _, body = read_response(reader)
        assert status == 200, body
        time.sleep(1.2)  # past the 1 s header deadline since that request
        connection.sendall(LIVE)
        assert read_response(reader)[0] == 200


def test_connections_past_the_cap_get_503_busy_and_the_server_recovers(impatient_server: LiveServer) -> None:
    """Found in review: a surplus client that had already sent its request got a reset instead of the
    503 (the server closed with the request unread, and the kernel reset the connection)."""
    held = [connect(impatient_server) for _ in range(3)]
    try:
        with connect(impatient_server) as surplus:
            surplus.sendall(LIVE * 50)
            time.sleep(0.1)  # the request arrives before the server's answer is read
            _, received = answer_and_close(surplus)
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in head.lower()
        assert json.loads(body)["error"]["code"] == "busy"
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.2)  # the server notices the closed connections
    assert httpx.get(impatient_server.url + "/health/live").status_code == 200


def test_clients_that_stop_reading_are_dropped_and_free_their_connections(
    impatient_server: LiveServer,
) -> None:
    """Found in review: a client that sends requests but never reads the answers held its connection
    forever (the server waited for the socket to drain), so three of them filled the cap of three."""
    many_requests = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
    stalled = []
    try:
        for _ in range(3):
            connection = socket.socket()
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            host, port = impatient_server.url.removeprefix("http://").split(":")
            connection.connect((host, int(port)))
            connection.sendall(many_requests)
            stalled.append(connection)
        deadline = time.monotonic() + 10
        while (status := httpx.get(impatient_server.url + "/health/live").status_code) != 200:
            assert time.monotonic() < deadline, f"still {status} after 10 s"
            time.sleep(0.2)
    finally:
        for connection in stalled:
            connection.close()


def test_large_decodes_take_turns_while_small_ones_pass_and_waiting_holds_no_thread() -> None:
    """Two 12-megapixel WebP decodes at once peaked at 250 MB; one at a time, 69 MB. Found in review:
    a decode waiting for its slot blocked a worker thread, so a queue of large uploads held the thread
    pool; and a cancelled request freed its slot while its decode still ran."""
    large = hostile_uploads.encode(Image.new("RGB", (3000, 3000), "white"), "WEBP", lossless=True)
    small = hostile_uploads.encode(Image.fromarray(TEST_IMAGES[0]), "PNG")
    decoding, release = threading.Event(), threading.Event()

    def hold() -> str:
        decoding.set()
        release.wait(10)
        return "held"

    def pixels(data: bytes) -> Callable[[], int]:
        return functools.partial(decoded_pixels, data)

    def size(data: bytes) -> Callable[[], int]:
        return functools.partial(len, data)

    async def holding(slots: DecodeSlots) -> asyncio.Task[str]:
        decoding.clear()
        release.clear()
        task = asyncio.create_task(slots.run(pixels(large), hold))
        while not decoding.is_set():
            await asyncio.sleep(0.01)
        return task

    async def scenario() -> None:
        patient, impatient = DecodeSlots(2, wait_s=30), DecodeSlots(2, wait_s=0.05)
        first = await holding(patient)
        queued = [asyncio.create_task(patient.run(pixels(large), size(large))) for _ in range(5)]
        await asyncio.sleep(0.3)
        threads = anyio.to_thread.current_default_thread_limiter()
        assert threads.borrowed_tokens == 1, "only the running decode holds a thread"
        assert await patient.run(pixels(small), size(small)) == len(
            small
        )  # the second slot serves small images
        release.set()
        assert await first == "held" and await asyncio.gather(*queued) == [len(large)] * 5

        first = await holding(impatient)
        first.cancel()  # the request goes away; its decode runs on and keeps the slot
        await asyncio.sleep(0.05)
        with pytest.raises(ApiError, match="retry in a second") as busy:
            await impatient.run(pixels(large), size(large))
        assert busy.value.status_code == 503 and busy.value.code == "busy"
        release.set()
        await asyncio.sleep(0.05)
        assert await impatient.run(pixels(large), size(large)) == len(large)

    asyncio.run(scenario())


def test_a_small_image_is_read_and_decoded_in_one_thread_hop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, every upload took two hops to the thread pool: one to read its header, one to decode.
    A large image then waits for the large slot, without reading its header again."""
    small = hostile_uploads.encode(Image.fromarray(TEST_IMAGES[0]), "PNG")
    large = hostile_uploads.encode(Image.new("RGB", (2000, 1500), "white"), "PNG")
    hops: list[str] = []
    run_in_threadpool = api.limits.run_in_threadpool

    async def counted(function: Callable[[], object]) -> object:
        hops.append(getattr(function, "__name__", "header"))
        return await run_in_threadpool(function)

    monkeypatch.setattr(api.limits, "run_in_threadpool", counted)

    async def decode(data: bytes) -> tuple[int, list[str]]:
        hops.clear()
        result = await DecodeSlots(2, wait_s=1).run(
            functools.partial(decoded_pixels, data), lambda: len(data)
        )
        return result, list(hops)

    assert asyncio.run(decode(small)) == (len(small), ["decode_if_small"])
    assert asyncio.run(decode(large)) == (len(large), ["decode_if_small", "<lambda>"])


def test_a_batch_waits_for_one_slot_and_takes_the_others_only_if_free() -> None:
    """Found in review: a batch split over the slots waited for each of them, so it could be answered 503
    with half its files decoded, and held every slot against single requests. Now it waits for one, as an
    upload does; free slots join; the last decoder to finish runs the forward pass (`then`) once."""
    small = [hostile_uploads.encode(Image.fromarray(image), "PNG") for image in TEST_IMAGES[:6]]
    large = hostile_uploads.encode(Image.new("RGB", (2000, 1500), "white"), "PNG")
    running, most, lock = [0], [0], threading.Lock()
    large_slot_held: list[bool] = []

    def decode(data: bytes) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        large_slot_held.append(slots.large.locked())
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return len(data)

    def batch(items: list[bytes]) -> Callable[[], Any]:
        most[0] = 0
        large_slot_held.clear()
        return slots.run_shared(items, decoded_pixels, decode, lambda decoded: ("then", decoded))

    async def scenario() -> None:
        assert await batch(small) == ("then", [len(data) for data in small])
        assert most[0] == 2, "both free slots decode"
        held = await slots.hold([slots.slots], deadline=0)  # a single request's decode
        assert await batch(small) == ("then", [len(data) for data in small])
        assert most[0] == 1, "the busy slot is left to its request"
        other = await slots.hold([slots.slots], deadline=0)
        with pytest.raises(ApiError, match="retry in a second"):
            await batch(small)
        assert most[0] == 0, "nothing decoded for a batch answered 503"
        for semaphore in held + other:
            semaphore.release()
        assert await batch([*small[:2], large]) == ("then", [len(small[0]), len(small[1]), len(large)])
        assert most[0] == 1 and all(large_slot_held), "a large image: one decoder, in the large slot"

    slots = DecodeSlots(2, wait_s=0.05)
    asyncio.run(scenario())


def test_header_reads_take_turns_too() -> None:
    """Found in review: a PNG of many tiny chunks costs 0.27 s per 1.2 MB just to read its header, and
    header reads ran before any slot was taken, so any number ran at once."""
    reading, release = threading.Event(), threading.Event()

    def slow_header() -> int:
        reading.set()
        release.wait(10)
        return 0

    async def scenario() -> None:
        slots = DecodeSlots(1, wait_s=0.05)
        first = asyncio.create_task(slots.run(slow_header, lambda: "decoded"))
        while not reading.is_set():
            await asyncio.sleep(0.01)
        with pytest.raises(ApiError, match="retry in a second"):
            await slots.run(lambda: 0, lambda: "decoded")
        release.set()
        assert await first == "decoded"
        assert await slots.run(lambda: 0, lambda: "decoded") == "decoded"

    asyncio.run(scenario())
