// The web page: choose or drop an image, preview it, send it to /v1/predict, show the top-3 as bars.
const input = document.getElementById("file-input");
const dropZone = document.getElementById("drop-zone");
const preview = document.getElementById("preview");
const statusLine = document.getElementById("status");
const result = document.getElementById("result");
const errorBox = document.getElementById("error");

function percent(value) {
  return `${(value * 100).toFixed(1)}%`;
}

function showError(message) {
  result.hidden = true;
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function showPrediction(prediction) {
  errorBox.hidden = true;
  document.getElementById("category").textContent =
    prediction.category === "unsure" ? "Not sure — best guesses:" : prediction.category;
  document.getElementById("confidence").textContent = percent(prediction.confidence);
  document.getElementById("model-version").textContent = prediction.model_version;
  const list = document.getElementById("top-k");
  list.replaceChildren(
    ...prediction.top_k.map(({ category, confidence }) => {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.textContent = category;
      const track = document.createElement("span");
      track.className = "track";
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.display = "block";
      bar.style.width = percent(confidence);
      track.append(bar);
      const value = document.createElement("span");
      value.textContent = percent(confidence);
      item.append(name, track, value);
      return item;
    }),
  );
  result.hidden = false;
}

async function classify(file) {
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  document.getElementById("drop-hint").hidden = true;
  statusLine.textContent = "Classifying…";
  const form = new FormData();
  form.append("file", file);
  try {
    const response = await fetch("/v1/predict", { method: "POST", body: form });
    const body = await response.json();
    if (response.ok) {
      showPrediction(body);
    } else {
      showError(body.error ? `Rejected: ${body.error.message}` : `Request failed (${response.status})`);
    }
  } catch (error) {
    showError(`Could not reach the service: ${error.message}`);
  } finally {
    statusLine.textContent = "";
  }
}

input.addEventListener("change", () => {
  if (input.files.length) classify(input.files[0]);
});
dropZone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  if (event.dataTransfer.files.length) classify(event.dataTransfer.files[0]);
});
