"""One JSON error schema for every failure: `{"error": {"code": ..., "message": ...}}`, never a bare 500
(unexpected exceptions are answered by `api.observability.Observability`, which knows the request id)."""

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

PYTHON_TYPE = re.compile(r"<class '[\w.]+'>")
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "not_ready",
    507: "storage_full",
}


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(HTTPException):
    """A client error with a stable code. An HTTPException so that FastAPI's body parsing passes it on."""

    def __init__(
        self, status_code: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code
        self.message = message


def error_response(
    status_code: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


def describe_validation(error: RequestValidationError) -> tuple[str, str]:
    """A code and one readable sentence for FastAPI's validation errors (missing field, bad query)."""
    problems = error.errors()
    for problem in problems:
        if problem["type"] == "missing" and tuple(problem["loc"][:1]) == ("body",):
            field = problem["loc"][-1]
            return "missing_file", f"multipart form field {field!r} with an image file is required"
    parts = [
        f"{'.'.join(str(p) for p in problem['loc'])}: {readable(problem['msg'])}" for problem in problems
    ]
    return "validation_error", "; ".join(parts)


def readable(message: str) -> str:
    """A validation message without Python's type names ("Expected UploadFile, received: <class 'str'>")."""
    if message.startswith("Value error, Expected UploadFile"):
        return "expected an uploaded file, got a text field"
    return PYTHON_TYPE.sub("another type", message)


def install_error_handlers(app: FastAPI) -> None:
    async def on_http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        code = getattr(error, "code", None) or STATUS_CODES.get(error.status_code, "error")
        return error_response(error.status_code, code, str(error.detail), getattr(error, "headers", None))

    async def on_validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        code, message = describe_validation(error)
        return error_response(422, code, message)

    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)


def documented_errors(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries so /docs lists each error a route can return, with the schema."""
    descriptions = {
        400: "Bad input: empty file, not an image, corrupt or truncated image, too many files, a form "
        "field sent twice",
        413: "Upload larger than the size limit, or image with more pixels than the limit",
        401: "Feedback without the service's key (`X-API-Key`), when one is set",
        409: "Feedback for this image was already recorded (`duplicate_feedback`), or with another "
        "category (`conflicting_feedback`: kept for review)",
        415: "An image format other than JPEG, PNG, WebP, BMP or GIF",
        422: "Missing `file` field, an invalid parameter, or an unknown category",
        429: "Too many requests from one client (see Retry-After)",
        507: "The feedback storage quota is used up",
        503: "The model is not loaded yet, every image decoder is busy (see Retry-After), or feedback "
        "storage is unavailable",
    }
    return {code: {"model": ErrorResponse, "description": descriptions[code]} for code in status_codes}
