// The web page: choose or drop an image, preview it, send it to /v1/predict, show the top-3 as bars and
// the 28x28 image the model saw; then let the person confirm or correct the prediction (/v1/feedback).
const input = document.getElementById("file-input");
const dropZone = document.getElementById("drop-zone");
const preview = document.getElementById("preview");
const statusLine = document.getElementById("status");
const result = document.getElementById("result");
const errorBox = document.getElementById("error");
const feedbackForm = document.getElementById("feedback");
const feedbackStatus = document.getElementById("feedback-status");
const correctCategory = document.getElementById("correct-category");
let currentFile = null;

async function loadCategories() {
  const response = await fetch("/v1/metadata");
  if (!response.ok) return;
  const { classes } = await response.json();
  correctCategory.append(
    ...classes.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      return option;
    }),
  );
}

async function sendFeedback(fields) {
  const form = new FormData();
  form.append("file", currentFile);
  for (const [key, value] of Object.entries(fields)) form.append(key, value);
  feedbackStatus.textContent = "Sending…";
  try {
    const response = await fetch("/v1/feedback", { method: "POST", body: form });
    const body = await response.json();
    feedbackStatus.textContent = response.ok
      ? `Thank you: recorded as ${body.category} (feedback #${body.id}).`
      : `Not recorded: ${body.error ? body.error.message : `request failed (${response.status})`}`;
    if (response.ok) feedbackForm.hidden = true;
  } catch (error) {
    feedbackStatus.textContent = `Could not reach the service: ${error.message}`;
  }
}

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
  const headings = {
    unsure: "Not sure — best guesses:",
    out_of_scope: "Not one of the ten categories (out of scope)",
  };
  document.getElementById("category").textContent = headings[prediction.outcome] || prediction.category;
  document.getElementById("model-input").src = prediction.model_input;
  const separated = prediction.model_input_separated;
  document.getElementById("model-input-separated-figure").hidden = !separated;
  if (separated) document.getElementById("model-input-separated").src = separated;
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
  feedbackForm.hidden = false;
  feedbackStatus.textContent = "";
  correctCategory.value = "";
  result.hidden = false;
}

async function classify(file) {
  currentFile = file;
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  document.getElementById("drop-hint").hidden = true;
  statusLine.textContent = "Classifying…";
  const form = new FormData();
  form.append("file", file);
  try {
    const response = await fetch("/v1/predict?include_input=true", { method: "POST", body: form });
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
  input.value = ""; // choosing the same file again must classify it again
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
document.getElementById("confirm").addEventListener("click", () => sendFeedback({ confirm: "true" }));
feedbackForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sendFeedback({ category: correctCategory.value });
});
loadCategories();
