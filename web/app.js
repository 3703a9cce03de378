// Runs a keras_retinanet .tflite export (the default 4-output file of `retinanet export`, with its MediaPipe
// metadata) with MediaPipe Tasks for Web, on a chosen image or the camera, and draws the detections.
//
// URL parameters: model (URL of the .tflite, default files/model_float32.tflite), threshold (default 0.3),
// delegate (CPU or GPU, default CPU). The package and its WebAssembly files come from ./node_modules
// (`npm ci` in web/), never from a CDN.
//
// For tests and scripts: body[data-state] is "loading", "ready", "detecting", "done" or "error"; #detections
// holds the last image's detections as JSON, one row per (box, category): {name, score, x, y, width, height}
// in pixels of the image (MediaPipe merges categories whose integer boxes coincide into one detection).
import { FilesetResolver, ObjectDetector } from "./node_modules/@mediapipe/tasks-vision/vision_bundle.mjs";

const WASM_FOLDER = new URL("./node_modules/@mediapipe/tasks-vision/wasm", import.meta.url).href;
const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];

const params = new URLSearchParams(location.search);
const settings = {
  model: params.get("model") ?? "files/model_float32.tflite",
  threshold: Number(params.get("threshold") ?? 0.3),
  delegate: params.get("delegate") === "GPU" ? "GPU" : "CPU",
};

const view = document.getElementById("view");
const video = document.getElementById("video");
const statusLine = document.getElementById("status");
const output = document.getElementById("detections");
const cameraButton = document.getElementById("camera");
const thresholdInput = document.getElementById("threshold");
const delegateSelect = document.getElementById("delegate");

let fileset = null;
let detector = null;
let modelSource = { modelAssetPath: settings.model }; // or { modelAssetBuffer } from the file input
let modelName = settings.model;
let lastImage = null; // redrawn when the threshold changes
let cameraRunning = false;
let runningMode = "IMAGE";
const classColours = new Map(); // class name -> colour, in the order the classes first appear

function setState(state, message) {
  document.body.dataset.state = state;
  statusLine.textContent = message;
}

function report(error) {
  console.error(error);
  const hint = detector ? "" : " Choose a model file (.tflite) above, or open the page with ?model=URL.";
  setState("error", `Error: ${error?.message ?? error}.${hint}`);
}

async function loadDetector() {
  setState("loading", `Loading ${modelName} (${settings.delegate})…`);
  fileset ??= await FilesetResolver.forVisionTasks(WASM_FOLDER);
  detector?.close();
  detector = null;
  detector = await ObjectDetector.createFromOptions(fileset, {
    baseOptions: { ...modelSource, delegate: settings.delegate },
    runningMode,
    scoreThreshold: settings.threshold,
  });
  setState("ready", `Model ${modelName} loaded (${settings.delegate}). Choose an image or start the camera.`);
}

/** One row per (box, category), in pixels of the image. */
function rows(result) {
  return result.detections.flatMap(({ boundingBox: box, categories }) =>
    categories.map((category) => ({
      name: category.categoryName || String(category.index),
      score: category.score,
      x: box.originX,
      y: box.originY,
      width: box.width,
      height: box.height,
    })),
  );
}

/** Draws `source` (an image or a video frame) on the canvas and the detections over it. */
function draw(source, width, height, detections) {
  view.width = width;
  view.height = height;
  const context = view.getContext("2d");
  context.drawImage(source, 0, 0, width, height);
  const line = Math.max(2, Math.round(Math.max(width, height) / 300));
  context.lineWidth = line;
  context.font = `${6 * line + 4}px system-ui, sans-serif`;
  context.textBaseline = "bottom";
  // Lowest score first, so that the strongest boxes and labels end up on top.
  for (const d of [...detections].sort((a, b) => a.score - b.score)) {
    if (!classColours.has(d.name)) classColours.set(d.name, COLOURS[classColours.size % COLOURS.length]);
    const colour = classColours.get(d.name);
    context.strokeStyle = colour;
    context.strokeRect(d.x, d.y, d.width, d.height);
    const label = `${d.name} ${d.score.toFixed(2)}`;
    const textHeight = 6 * line + 6;
    const textWidth = context.measureText(label).width + 2 * line;
    const top = d.y >= textHeight ? d.y - textHeight : d.y;
    context.fillStyle = colour;
    context.fillRect(d.x - line / 2, top, textWidth, textHeight);
    context.fillStyle = "#fff";
    context.fillText(label, d.x + line / 2, top + textHeight - 1);
  }
}

async function setRunningMode(mode) {
  if (runningMode !== mode) {
    runningMode = mode;
    await detector.setOptions({ runningMode: mode });
  }
}

async function detectImage(image) {
  lastImage = image;
  setState("detecting", "Detecting…");
  await setRunningMode("IMAGE");
  const started = performance.now();
  const found = rows(detector.detect(image));
  const milliseconds = performance.now() - started;
  draw(image, image.naturalWidth, image.naturalHeight, found);
  output.textContent = JSON.stringify(found, null, 1);
  setState(
    "done",
    `${found.length} detections with score ≥ ${settings.threshold} on ${image.naturalWidth} × ` +
      `${image.naturalHeight} px in ${milliseconds.toFixed(0)} ms (${modelName}, ${settings.delegate}).`,
  );
}

async function openImage(file) {
  const image = new Image();
  image.src = URL.createObjectURL(file);
  await image.decode();
  await detectImage(image);
}

async function startCamera() {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  video.srcObject = stream;
  await video.play();
  await setRunningMode("VIDEO");
  cameraRunning = true;
  cameraButton.textContent = "Stop camera";
  setState("done", `Camera ${video.videoWidth} × ${video.videoHeight} px (${modelName}, ${settings.delegate}).`);
  let lastTime = -1;
  const frame = () => {
    if (!cameraRunning) return;
    if (video.currentTime !== lastTime) {
      lastTime = video.currentTime;
      const started = performance.now();
      const found = rows(detector.detectForVideo(video, started));
      const milliseconds = performance.now() - started;
      draw(video, video.videoWidth, video.videoHeight, found);
      statusLine.textContent =
        `Camera ${video.videoWidth} × ${video.videoHeight} px: ${found.length} detections with score ≥ ` +
        `${settings.threshold} in ${milliseconds.toFixed(0)} ms (${modelName}, ${settings.delegate}).`;
    }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

function stopCamera() {
  cameraRunning = false;
  video.srcObject?.getTracks().forEach((track) => track.stop());
  video.srcObject = null;
  cameraButton.textContent = "Start camera";
}

document.getElementById("image-file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (!file || !detector) return;
  stopCamera();
  openImage(file).catch(report);
});

document.getElementById("model-file").addEventListener("change", async (event) => {
  const [file] = event.target.files;
  if (!file) return;
  stopCamera();
  modelSource = { modelAssetBuffer: new Uint8Array(await file.arrayBuffer()) };
  modelName = file.name;
  runningMode = "IMAGE";
  loadDetector()
    .then(() => (lastImage ? detectImage(lastImage) : undefined))
    .catch(report);
});

cameraButton.addEventListener("click", () => {
  if (!detector) return;
  if (cameraRunning) stopCamera();
  else startCamera().catch((error) => (stopCamera(), report(error)));
});

thresholdInput.value = settings.threshold;
thresholdInput.addEventListener("change", async () => {
  settings.threshold = Number(thresholdInput.value);
  await detector?.setOptions({ scoreThreshold: settings.threshold });
  if (lastImage && !cameraRunning) detectImage(lastImage).catch(report);
});

delegateSelect.value = settings.delegate;
delegateSelect.addEventListener("change", () => {
  settings.delegate = delegateSelect.value;
  stopCamera();
  runningMode = "IMAGE";
  loadDetector()
    .then(() => (lastImage ? detectImage(lastImage) : undefined))
    .catch(report);
});

loadDetector().catch(report);
