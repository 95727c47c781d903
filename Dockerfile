# Slim runtime image for the prediction API: CPU-only torch, non-root, only runtime code and the
# promoted weights. Its one install step, tasks/install_runtime.sh, is also run by CI
# (tasks/check_runtime.sh: fresh venv, start, probe), since no Docker engine runs on the build machine.
#
#   docker build --build-arg TORCH_INDEX_URL=<PyTorch CPU wheel index> -t apparel-api .
#   docker run -p 8000:8000 apparel-api            # then open http://localhost:8000/
#
# Without TORCH_INDEX_URL, torch comes from the default index (a much larger CUDA build).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APPAREL_HOST=0.0.0.0 \
    APPAREL_PORT=8000 \
    APPAREL_WORKERS=1 \
    APPAREL_FEEDBACK_DIR=/var/lib/apparel/feedback

WORKDIR /build
COPY pyproject.toml README.md Pipfile.lock ./
COPY tasks/install_runtime.sh tasks/lock_requirements.py tasks/
COPY text_recognizer text_recognizer
COPY training training
COPY release release
COPY curation curation
COPY api api
RUN TORCH_INDEX_URL="$TORCH_INDEX_URL" bash tasks/install_runtime.sh /opt/venv /build \
    && rm -rf /build /root/.cache \
    && useradd --system --uid 10001 --create-home --home-dir /app app \
    && mkdir -p /var/lib/apparel/feedback && chown app /var/lib/apparel/feedback

WORKDIR /app
USER app
EXPOSE 8000
# Feedback images and the SQLite database (or set APPAREL_FEEDBACK_DB_URL to a shared database).
VOLUME /var/lib/apparel/feedback
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]
CMD ["/opt/venv/bin/python", "-m", "api.serve"]
