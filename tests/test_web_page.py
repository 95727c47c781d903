"""The web page in a real headless Chromium (Debian's), driven by Playwright, against a real server."""

import base64
import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
from PIL import Image

from support.local_server import LiveServer
from support.product_photos import product_photo
from text_recognizer.datasets.idx import read_idx
from text_recognizer.datasets.shop_photos import iter_image_bytes, read_photos
from text_recognizer.models import ClassifierModel
from text_recognizer.preprocessing import image_bytes_to_input, image_bytes_to_views

from .conftest import FIXTURES_DIR
from .test_shop_photos import SHOP_FIXTURES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# CI installs Chromium (.ci/run); elsewhere a missing browser skips rather than fails.
if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.usefixtures("serving_fixture_model")  # not the shipped model

TEST_IMAGES = read_idx(FIXTURES_DIR / "t10k-images-idx3-ubyte.gz").numpy()
TEST_LABELS = read_idx(FIXTURES_DIR / "t10k-labels-idx1-ubyte.gz").tolist()
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("server")
    live = LiveServer.start(folder / "server.log", env={"APPAREL_FEEDBACK_DIR": str(folder / "feedback")})
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, server: LiveServer) -> Iterator[Page]:
    page = browser.new_page()
    blocked: list[str] = []  # the page must work under its own Content-Security-Policy
    page.on(
        "console",
        lambda message: blocked.append(message.text) if "Content Security" in message.text else None,
    )
    page.goto(server.url + "/")
    yield page
    page.close()
    assert not blocked, blocked


def test_choosing_a_photo_shows_category_confidence_and_top_3(
    page: Page, server: LiveServer, tmp_path: Path
) -> None:
    photo = tmp_path / "boot.jpg"
    photo.write_bytes(product_photo(TEST_IMAGES[0], seed=0))
    answer = httpx.post(server.url + "/v1/predict?top_k=3", files={"file": photo.read_bytes()}).json()
    page.set_input_files("#file-input", str(photo))
    expect(page.locator("#category")).to_have_text("Ankle boot")
    expect(page.locator("#confidence")).to_have_text(f"{answer['confidence']:.1%}")  # one decimal
    expect(page.locator("#top-k li")).to_have_count(3)
    expect(page.locator("#top-k li").first).to_contain_text(answer["top_k"][0]["category"])
    expect(page.locator("#preview")).to_be_visible()
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)


def test_the_page_shows_the_28x28_image_the_model_saw(page: Page, tmp_path: Path) -> None:
    photo = tmp_path / "boot.jpg"
    photo.write_bytes(product_photo(TEST_IMAGES[0], seed=0))
    page.set_input_files("#file-input", str(photo))
    expect(page.locator("#model-input")).to_be_visible()
    seen = page.locator("#model-input")
    expect(seen).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    assert seen.evaluate("(image) => [image.naturalWidth, image.naturalHeight]") == [28, 28]
    shown = Image.open(io.BytesIO(base64.b64decode(seen.get_attribute("src").split(",", 1)[1])))
    assert np.array_equal(np.asarray(shown), image_bytes_to_input(photo.read_bytes()))


def test_an_item_outside_the_ten_classes_is_shown_as_such(page: Page, tmp_path: Path) -> None:
    """A real belt from the shop export's fixture: the page says it is none of the ten categories."""
    belts = [p.image for p in read_photos(SHOP_FIXTURES) if p.source_label == "Accessories/Belts/Belts"]
    photo = tmp_path / "belt.jpg"
    photo.write_bytes(dict(iter_image_bytes(SHOP_FIXTURES, belts[:1]))[belts[0]])
    page.set_input_files("#file-input", str(photo))
    expect(page.locator("#category")).to_have_text("Not one of the ten categories (out of scope)")
    expect(page.locator("#model-input")).to_be_visible()


def test_a_phone_photo_shows_both_images_the_model_averaged(
    browser: Browser, fixture_model: Path, tmp_path: Path
) -> None:
    """Served by a model that averages with separated views (a format-6 copy of the fixture model), a
    real phone photo shows its separated 28x28 image too; a studio shoe on a plain backdrop does not."""
    model = ClassifierModel.load(fixture_model)
    model.separated_view_side = 64
    model.save(tmp_path / "model.pt")
    live = LiveServer.start(tmp_path / "server.log", env={"APPAREL_MODEL_PATH": str(tmp_path / "model.pt")})
    page = browser.new_page()
    try:
        page.goto(live.url + "/")
        photos = {p.source: p.image for p in read_photos(SHOP_FIXTURES)}
        for source, shown in (("phone", True), ("shoes", False)):
            photo = tmp_path / f"{source}.jpg"
            photo.write_bytes(dict(iter_image_bytes(SHOP_FIXTURES, [photos[source]]))[photos[source]])
            page.set_input_files("#file-input", str(photo))
            expect(page.locator("#model-input")).to_be_visible()
            separated = page.locator("#model-input-separated")
            if shown:
                expect(separated).to_be_visible()
                views = image_bytes_to_views(photo.read_bytes(), separated_view_side=64)
                seen = Image.open(
                    io.BytesIO(base64.b64decode(separated.get_attribute("src").split(",", 1)[1]))
                )
                assert np.array_equal(np.asarray(seen), views[1])
            else:
                expect(separated).to_be_hidden()
    finally:
        page.close()
        live.stop()


def test_a_person_corrects_a_wrong_prediction_and_cannot_send_it_twice(page: Page, tmp_path: Path) -> None:
    photo = tmp_path / "trousers.jpg"
    photo.write_bytes(product_photo(TEST_IMAGES[TEST_LABELS.index(1)], seed=7))
    page.set_input_files("#file-input", str(photo))
    expect(page.locator("#category")).to_have_text("Trouser")
    page.select_option("#correct-category", "Dress")
    page.click("#send-correction")
    expect(page.locator("#feedback-status")).to_have_text(
        re.compile(r"Thank you: recorded as Dress \(feedback #\d+\)")
    )
    expect(page.locator("#feedback")).to_be_hidden()
    page.set_input_files("#file-input", str(photo))  # the same photo again: the service refuses a duplicate
    expect(page.locator("#feedback")).to_be_visible()
    page.click("#confirm")
    expect(page.locator("#feedback-status")).to_contain_text("Not recorded: this image already has feedback")


def test_dropping_a_photo_classifies_it(page: Page) -> None:
    encoded = base64.b64encode(product_photo(TEST_IMAGES[1], seed=1, image_format="PNG")).decode()
    page.evaluate(
        """(encoded) => {
            const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "item.png", { type: "image/png" }));
            document.getElementById("drop-zone").dispatchEvent(
                new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        encoded,
    )
    expect(page.locator("#result")).to_be_visible()
    expect(page.locator("#category")).not_to_be_empty()


def test_a_rejected_file_shows_a_clear_message(page: Page, tmp_path: Path) -> None:
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("this is not an image")
    page.set_input_files("#file-input", str(text_file))
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("Rejected: not a readable image")
    expect(page.locator("#result")).to_be_hidden()


def test_the_api_documentation_renders_offline_under_its_policy(browser: Browser, server: LiveServer) -> None:
    """Before, /docs loaded Swagger UI from a CDN: offline or behind a strict proxy it was a blank page."""
    page = browser.new_page()
    elsewhere: list[str] = []
    page.route(
        re.compile(r"^(?!" + re.escape(server.url) + ").*"),
        lambda route: (elsewhere.append(route.request.url), route.abort()),
    )
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    page.goto(server.url + "/docs")
    expect(page.get_by_text("/v1/predict/batch").first).to_be_visible(timeout=20_000)
    page.close()
    assert elsewhere == [] and refused == []
