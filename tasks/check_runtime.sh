#!/usr/bin/env bash
# What the Docker image does, without Docker: install the runtime into a fresh virtual environment
# (tasks/install_runtime.sh), start the service from it outside the source tree, probe it, stop it.
set -euo pipefail
source "$(dirname "$0")/_environment.sh"
work="$(mktemp -d)"
server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true  # uvicorn re-raises SIGTERM after a graceful shutdown
    server_pid=""
  fi
}
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT

bash "$ROOT/tasks/install_runtime.sh" "$work/venv" "$ROOT"
cd "$work"  # import the installed package, not the checkout
# Port 0: the server binds a free port itself and says which (no race between choosing and binding).
APPAREL_FEEDBACK_DIR="$work/feedback" "$work/venv/bin/python" -m api.serve --port 0 > "$work/server.log" 2>&1 &
server_pid=$!
url=""
for _ in $(seq 1 240); do
  [ -n "$url" ] || url="$(grep -o 'Uvicorn running on http://[0-9.]*:[0-9]* (Press' "$work/server.log" | grep -o 'http://[0-9.:]*' || true)"
  [ -n "$url" ] && curl -fsS "$url/health/ready" > /dev/null 2>&1 && break
  sleep 0.5
done
[ -n "$url" ] || { echo "the server never said where it listens"; cat "$work/server.log"; exit 1; }
"$VENV_PYTHON" -c "
import sys; sys.path.insert(0, '$ROOT')
from support.product_photos import product_photo
from text_recognizer.datasets.idx import read_idx
from pathlib import Path
image = read_idx(Path('$ROOT/tests/fixtures/fashion_mnist/t10k-images-idx3-ubyte.gz'))[0].numpy()
Path('$work/boot.jpg').write_bytes(product_photo(image, seed=0))
from text_recognizer.datasets.shop_photos import iter_image_bytes, read_photos
fixtures = Path('$ROOT/tests/fixtures/shop_photos')
phone = next(p.image for p in read_photos(fixtures) if p.source == 'phone')
Path('$work/phone.jpg').write_bytes(dict(iter_image_bytes(fixtures, [phone]))[phone])
"
echo "probe: $(curl -fsS "$url/health/live")"
echo "probe: $(curl -fsS "$url/health/ready")"
prediction="$(curl -fsS -F "file=@$work/boot.jpg" "$url/v1/predict")"
echo "probe: $prediction"
echo "$prediction" | grep -q '"category":"Ankle boot"' || { echo "unexpected prediction"; cat "$work/server.log"; exit 1; }
# A real phone photo (a busy background): the shipped model also classifies its separated view (OpenCV).
phone="$(curl -fsS -F "file=@$work/phone.jpg" "$url/v1/predict?include_input=true")"
echo "probe: phone photo, $(echo "$phone" | grep -o '"category":"[^"]*"')"
echo "$phone" | grep -q '"model_input_separated":"data:image/png' || { echo "no separated view"; cat "$work/server.log"; exit 1; }
raw="$(curl -fsS --data-binary "@$work/boot.jpg" -H 'Content-Type: image/jpeg' "$url/v1/predict")"
[ "$raw" = "$prediction" ] || { echo "raw-body prediction differs: $raw"; cat "$work/server.log"; exit 1; }
receipt="$(curl -fsS -F "file=@$work/boot.jpg" -F category=sandal "$url/v1/feedback")"
echo "probe: $receipt"
echo "$receipt" | grep -q '"category":"Sandal"' && [ -n "$(ls "$work/feedback/images"/*/)" ] || { echo "feedback not stored"; cat "$work/server.log"; exit 1; }
status="$(curl -s -o /dev/null -w '%{http_code}' -F "file=@$ROOT/README.md" "$url/v1/predict")"
[ "$status" = 400 ] || { echo "expected 400 for a non-image, got $status"; exit 1; }
stop_server
grep -q "Application shutdown complete" "$work/server.log" || { echo "no graceful shutdown"; cat "$work/server.log"; exit 1; }
echo "check_runtime: the runtime environment installs, serves, answers and shuts down gracefully"
