"""The FastAPI application: prediction endpoints, health, metadata, metrics and the web page."""

import functools
import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as StarletteUpload

from api.batching import MicroBatcher
from api.errors import ApiError, ErrorBody, documented_errors, error_response, install_error_handlers
from api.feedback_store import (
    ConflictingFeedbackError,
    DuplicateFeedbackError,
    FeedbackRecord,
    FeedbackStore,
)
from api.limits import (
    FEEDBACK_KEY_HEADER,
    BodySizeLimit,
    DecodeSlots,
    FeedbackGate,
    Large,
    RateLimit,
    return_freed_memory_promptly,
)
from api.observability import Metrics, Observability, configure_logging, request_id_var
from api.predictor import Prediction, Predictor, png_bytes
from api.security_headers import DOCS_ASSETS, SecurityHeaders
from api.settings import Settings
from text_recognizer.labels import LabelError, class_index
from text_recognizer.preprocessing import ImageError, decoded_pixels

STATIC_DIR = Path(__file__).resolve().parent / "static"
FEEDBACK_PATH = "/v1/feedback"
IMAGE_ERROR_STATUS = {"unsupported_format": 415, "image_too_large": 413}
# How long a feedback request waits, on a worker thread, for another that is opening (connecting to,
# migrating) the store: opening takes a fraction of a second; a hung one must not hold many threads.
STORE_OPEN_WAIT_S = 2.0
logger = logging.getLogger("api")


MISSING_FILE = (
    "send the image as multipart form field 'file', or as the request body with Content-Type image/..."
)
IMAGE_FORMATS = "JPEG, PNG, WebP, BMP or GIF image of one item"
SINGLE_IMAGE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary", "description": IMAGE_FORMATS}},
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary", "description": IMAGE_FORMATS}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}

TopK = Annotated[int, Query(ge=1, le=10, description="how many categories to rank in `top_k`")]


class BatchItem(BaseModel):
    filename: str | None
    prediction: Prediction | None = None
    error: ErrorBody | None = None


class BatchResponse(BaseModel):
    results: list[BatchItem]
    model_version: str


class FeedbackReceipt(BaseModel):
    id: int
    category: str = Field(description="the correct category, as the sender gave or confirmed it")
    predicted_category: str = Field(description="what the served model predicted for this image")
    predicted_confidence: float
    confirmed: bool = Field(description="the sender agreed with the prediction")
    model_version: str
    image_sha256: str = Field(description="sha256 of the stored image's pixels: what tells images apart")


def feedback_unavailable() -> ApiError:
    return ApiError(503, "feedback_unavailable", "feedback storage is unavailable; try again later")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    metrics = Metrics()
    decode_slots = DecodeSlots(settings.max_concurrent_decodes, settings.decode_wait_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging()
        return_freed_memory_promptly()
        torch.set_num_threads(settings.torch_threads)
        predictor = Predictor.load(
            settings.model_path, settings.use_confidence_threshold, settings.inference_backend
        )
        await run_in_threadpool(predictor.warm_up)
        app.state.predictor = predictor
        batcher = None
        if settings.micro_batching:
            batcher = MicroBatcher(
                predictor.predict_arrays,
                settings.batch_wait_ms / 1000,
                settings.batch_max_size,
                metrics.observe_batch,
            )
            batcher.start()
        app.state.batcher = batcher
        logger.info("model %s loaded from %s; ready", predictor.version, settings.model_path)
        yield
        if batcher is not None:
            await batcher.stop()

    app = FastAPIOffline(  # /docs with its assets served here, not from a CDN; one docs page is enough
        static_url=DOCS_ASSETS,
        redoc_url=None,
        title="Apparel classifier",
        version="1",
        summary="Upload a photo of one apparel item; get its Fashion-MNIST category and a confidence.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(
        FeedbackGate,
        path=FEEDBACK_PATH,
        api_key=settings.feedback_api_key.get_secret_value(),
        rate=RateLimit(settings.feedback_per_minute),
    )
    app.add_middleware(
        BodySizeLimit,
        limit_bytes=settings.max_upload_bytes,
        path_limits={"/v1/predict/batch": settings.max_upload_bytes * settings.max_batch_files},
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(Observability, metrics=metrics)  # outermost: sees every response
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def predictor_of(request: Request) -> Predictor:
        predictor: Predictor | None = getattr(request.app.state, "predictor", None)
        if predictor is None or not predictor.ready:
            raise ApiError(503, "not_ready", "the model is still loading")
        return predictor

    def refuse_too_large(upload: StarletteUpload) -> None:
        if upload.size is not None and upload.size > settings.max_upload_bytes:
            message = (
                f"{upload.filename or 'the file'} is {upload.size} bytes; limit {settings.max_upload_bytes}"
            )
            raise ApiError(413, "payload_too_large", message)

    async def read_upload(upload: StarletteUpload) -> bytes:
        refuse_too_large(upload)
        return await upload.read()

    store_lock = threading.Lock()

    @functools.cache
    def open_feedback_store() -> FeedbackStore:
        return FeedbackStore.at(settings.feedback_dir, settings.feedback_db_url or None)

    def feedback_store() -> FeedbackStore:
        """Opened on first use (once per worker), so a prediction-only deployment needs no writable
        feedback folder."""
        if not store_lock.acquire(timeout=STORE_OPEN_WAIT_S):  # another request is opening it
            raise feedback_unavailable()
        try:
            return open_feedback_store()
        finally:
            store_lock.release()

    def refuse_repeated_fields(form: FormData) -> None:
        """A field sent twice is ambiguous (which category was meant?): refused, not "last one wins"."""
        counts = Counter(name for name, _ in form.multi_items())
        repeated = sorted(name for name, count in counts.items() if count > 1)
        if repeated:
            raise ApiError(400, "repeated_field", f"form field(s) {', '.join(repeated)} sent more than once")

    def rejected(error: ImageError) -> ApiError:
        return ApiError(IMAGE_ERROR_STATUS.get(error.code, 400), error.code, error.message)

    async def uploaded_image(request: Request) -> bytes:
        """The image of a single-image request: a multipart `file` field, or the whole body when it is
        sent raw (`Content-Type: image/...` or `application/octet-stream`), which skips multipart
        encoding and parsing on both sides."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            async with request.form(max_files=2, max_fields=16) as form:
                refuse_repeated_fields(form)  # a second file is a repeated field, like any other
                upload = form.get("file")
                if not isinstance(upload, StarletteUpload):  # FastAPI's UploadFile subclasses it
                    raise ApiError(422, "missing_file", MISSING_FILE)
                return await read_upload(upload)
        if content_type.startswith("image/") or content_type == "application/octet-stream":
            data = await request.body()  # streamed under BodySizeLimit, which allows multipart framing
            if len(data) > settings.max_upload_bytes:
                message = f"the image is {len(data)} bytes; limit {settings.max_upload_bytes}"
                raise ApiError(413, "payload_too_large", message)
            return data
        if not content_type and not await request.body():
            raise ApiError(422, "missing_file", MISSING_FILE)
        raise ApiError(415, "unsupported_media_type", f"Content-Type {content_type!r}: {MISSING_FILE}")

    async def predict_data(
        request: Request, predictor: Predictor, data: bytes, top_k: int, include_input: bool = False
    ) -> Prediction:
        try:
            prediction = await classified(request.app.state.batcher, predictor, data, top_k, include_input)
        except ImageError as error:
            raise rejected(error) from None
        metrics.observe_prediction(prediction.category, prediction.confidence)
        return prediction

    async def classified(
        batcher: MicroBatcher | None, predictor: Predictor, data: bytes, top_k: int, include_input: bool
    ) -> Prediction:
        """Batching off: decoded and classified in one hop to the thread pool. On: the same when the
        batcher is idle and the image small, holding the batcher's turn (a large image would hold it
        through its decode, so it decodes first and then queues); otherwise decoded, then queued."""
        pixels_of = functools.partial(decoded_pixels, data)
        predict = functools.partial(predictor.predict_bytes, data, top_k, settings.max_pixels, include_input)
        if batcher is None:
            prediction = await decode_slots.run(pixels_of, predict)
            metrics.observe_batch(1)
            return prediction
        convert = functools.partial(predictor.model_input, data, settings.max_pixels)
        attempt = None
        if batcher.idle:
            attempt = await batcher.alone(functools.partial(decode_slots.run_if_small, pixels_of, predict))
            if isinstance(attempt, Prediction):
                return attempt
        if isinstance(attempt, Large):  # its header is read: not again
            pixels = await decode_slots.run_sized(attempt.pixels, convert)
        else:
            pixels = await decode_slots.run(pixels_of, convert)
        prediction = await batcher.predict(pixels, top_k)
        return predictor.with_input(prediction, pixels) if include_input else prediction

    @app.post(
        "/v1/predict",
        response_model=Prediction,
        responses=documented_errors(400, 413, 415, 422, 503),
        openapi_extra={"requestBody": SINGLE_IMAGE_BODY},
    )
    async def predict(
        request: Request,
        top_k: TopK = settings.default_top_k,
        include_input: Annotated[
            bool,
            Query(
                description="also return the 28x28 image the model saw (`model_input`), and its "
                "separated view where it averaged one in (`model_input_separated`)"
            ),
        ] = False,
    ) -> Prediction:
        """Classify one image, sent as the multipart field `file` or as the raw request body.

        The answer's `outcome` is "class" (one of the ten), "unsure" (below the confidence threshold) or
        "out_of_scope" (the item is not one of the ten classes)."""
        predictor = predictor_of(request)
        return await predict_data(request, predictor, await uploaded_image(request), top_k, include_input)

    @app.post(
        "/v1/predict/batch", response_model=BatchResponse, responses=documented_errors(400, 413, 422, 503)
    )
    async def predict_batch(
        request: Request,
        files: Annotated[
            list[UploadFile], File(description="several image files, one result each, in order")
        ],
        top_k: TopK = settings.default_top_k,
    ) -> BatchResponse:
        """Classify several images: decoded in a decode slot, and in every other slot free at the
        time, then one forward pass for all of them; a bad file gets its own error entry and does not
        fail the others."""
        predictor = predictor_of(request)
        if len(files) > settings.max_batch_files:
            message = f"{len(files)} files sent; at most {settings.max_batch_files} per batch"
            raise ApiError(400, "too_many_files", message)
        uploads: dict[int, StarletteUpload] = {}
        outcomes: dict[int, Prediction | ApiError] = {}
        for position, upload in enumerate(files):
            try:
                refuse_too_large(upload)
                uploads[position] = upload
            except ApiError as error:
                outcomes[position] = error

        def contents(upload: StarletteUpload) -> bytes:
            """Read on the thread pool, one file at a time: a batch may carry 16 x 10 MB, which stay in
            the parser's spooled files (on disk past 1 MB) rather than all in memory (found in review)."""
            upload.file.seek(0)
            return upload.file.read()

        def pixels(upload: StarletteUpload) -> int:
            return decoded_pixels(contents(upload))

        def decode(upload: StarletteUpload) -> np.ndarray | ApiError:
            try:
                return predictor.model_input(contents(upload), settings.max_pixels)
            except ImageError as error:
                return rejected(error)

        def predict_decoded(decoded: list[np.ndarray | ApiError]) -> list[Prediction | ApiError]:
            """One forward pass for every file that decoded; the others keep their errors."""
            inputs = [image for image in decoded if not isinstance(image, ApiError)]
            answers = iter(predictor.predict_arrays(inputs, top_k) if inputs else [])
            return [item if isinstance(item, ApiError) else next(answers) for item in decoded]

        if uploads:
            answered = await decode_slots.run_shared(list(uploads.values()), pixels, decode, predict_decoded)
            outcomes |= dict(zip(uploads, answered, strict=True))
            if count := sum(not isinstance(outcome, ApiError) for outcome in answered):
                metrics.observe_batch(count)
        results = []
        for position, upload in enumerate(files):
            outcome = outcomes[position]
            if isinstance(outcome, ApiError):
                body = ErrorBody(code=outcome.code, message=outcome.message)
                results.append(BatchItem(filename=upload.filename, error=body))
            else:
                metrics.observe_prediction(outcome.category, outcome.confidence)
                results.append(BatchItem(filename=upload.filename, prediction=outcome))
        return BatchResponse(results=results, model_version=predictor.version)

    @app.post(
        FEEDBACK_PATH,
        status_code=201,
        response_model=FeedbackReceipt,
        responses=documented_errors(400, 401, 409, 413, 415, 422, 429, 503, 507),
        openapi_extra={"parameters": [FEEDBACK_KEY_HEADER]},
    )
    async def feedback(
        request: Request,
        file: Annotated[UploadFile, File(description="the image the feedback is about")],
        category: Annotated[
            str | None, Form(description="the correct category: name, slug (ankle-boot) or index")
        ] = None,
        confirm: Annotated[bool, Form(description="true: the prediction was right")] = False,
    ) -> FeedbackReceipt:
        """Tell the service the correct category of an image (or confirm its prediction), for retraining.

        Stored is the image the model worked from (at most 112 px, PNG, no metadata), not the upload. A
        different category for an image that already has feedback is a 409 `conflicting_feedback`, kept
        for review; only feedback a reviewer accepted becomes training data. The key and the rate limit
        are checked before the body is read (`api.limits.FeedbackGate`)."""
        predictor = predictor_of(request)
        refuse_repeated_fields(await request.form())
        if (category is None) == (not confirm):
            raise ApiError(422, "validation_error", "send either category=<correct category> or confirm=true")
        data = await read_upload(file)

        def decode_and_predict() -> tuple[bytes, Prediction]:
            """The working image to store, and the prediction as `/v1/predict` makes it (one decode)."""
            image, views = predictor.upload(data, settings.max_pixels)
            return png_bytes(image), predictor.predict_arrays([views], 1)[0]

        try:
            png, prediction = await decode_slots.run(
                functools.partial(decoded_pixels, data), decode_and_predict
            )
        except ImageError as error:
            raise rejected(error) from None
        predicted = prediction.top_k[0]
        classes = predictor.model.class_names
        try:
            label = classes.index(predicted.category) if category is None else class_index(category, classes)
        except LabelError as error:
            raise ApiError(422, "unknown_category", str(error)) from None

        def store(*args: Any, **fields: Any) -> FeedbackRecord:
            store = feedback_store()
            if settings.feedback_max_bytes and store.stored_bytes() >= settings.feedback_max_bytes:
                message = "the feedback storage quota is used up; tell the service's operators"
                raise ApiError(507, "storage_full", message)
            return store.add(*args, **fields)

        try:
            record = await run_in_threadpool(
                store,
                png,
                label=label,
                category=classes[label],
                predicted_category=predicted.category,
                predicted_confidence=predicted.confidence,
                confirmed=classes[label] == predicted.category,
                model_version=predictor.version,
                request_id=request_id_var.get(),
            )
        except DuplicateFeedbackError as error:
            raise ApiError(409, "duplicate_feedback", str(error)) from None
        except ConflictingFeedbackError as error:
            raise ApiError(409, "conflicting_feedback", str(error)) from None
        except (OSError, SQLAlchemyError):
            logger.exception("feedback could not be stored")
            raise feedback_unavailable() from None
        metrics.observe_feedback(record.confirmed)
        return FeedbackReceipt.model_validate(record, from_attributes=True)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        """The process is up and serving HTTP."""
        return {"status": "ok"}

    @app.get("/health/ready", responses=documented_errors(503))
    async def ready(request: Request) -> Any:
        """Ready only once the model is loaded and a warm-up prediction succeeded."""
        predictor: Predictor | None = getattr(request.app.state, "predictor", None)
        if predictor is None or not predictor.ready:
            return error_response(503, "not_ready", "the model is still loading")
        return {"status": "ready", "model_version": predictor.version}

    @app.get("/v1/metadata", responses=documented_errors(503))
    async def metadata(request: Request) -> dict[str, Any]:
        """Model name and version, classes, input spec, metrics and data checksums."""
        return predictor_of(request).metadata()

    @app.get("/metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus text format: requests and latency by route and status, predictions, confidences."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=FileResponse, include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    return app
