"""Security headers on every response: no MIME sniffing, no framing, no referrer, and a content security
policy that lets a page load only this server's files (plus `data:`/`blob:` images: the web page's
preview and 28x28 model input). The API documentation (`/docs`, Swagger UI, its assets served locally by
fastapi-offline) also needs the inline script and styles that FastAPI writes into the page."""

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
ONLY_OURS = "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
CONTENT_SECURITY_POLICY = f"default-src 'self'; img-src 'self' data: blob:; {ONLY_OURS}"
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    f"img-src 'self' data:; {ONLY_OURS}"
)
DOCS_ASSETS = "/static-docs"
DOCS_PAGE = "/docs"


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_POLICY if scope["path"] == DOCS_PAGE else CONTENT_SECURITY_POLICY

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.update(HEADERS)
                headers["Content-Security-Policy"] = policy
            await send(message)

        await self.app(scope, receive, send_with_headers)
