// The page: a drawing pad whose ink is classified live by the wasm module built from `infer`,
// or, with `?edge` in the address, by the edge worker that served the page.
import init, { Classifier, toMnist } from "./infer.js";

const pad = document.getElementById("pad");
const seen = document.getElementById("seen");
const status = document.getElementById("status");
const bars = document.getElementById("bars");
const ctx = pad.getContext("2d", { willReadFrequently: true });
const BRUSH = 20;
const DEBOUNCE_MS = 40;
// The pending debounced classification, and how many times the pad was cleared (an answer
// computed for an earlier drawing is not shown).
let timer = 0;
let clears = 0;

const fills = [];
for (let digit = 0; digit < 10; digit++) {
  const item = document.createElement("li");
  item.innerHTML = `<span>${digit}</span><span class="track"><span class="fill"></span></span><span class="value">–</span>`;
  bars.append(item);
  fills.push(item);
}

function showError(message) {
  status.textContent = message;
  status.classList.add("error");
}

let classifier = null;
let firstPredictionMs = null;
let wasm = null;
try {
  wasm = await init();
  // The WebGPU build starts asynchronously (and answers with promises, which `await`
  // unwraps); the CPU builds start and answer at once.
  if (new URLSearchParams(location.search).has("edge")) {
    classifier = new EdgeClassifier();
  } else {
    classifier = Classifier.create ? await Classifier.create(await hasWebGpu()) : new Classifier();
  }
  // One prediction on a blank input: proves the model runs before the page says "Ready".
  (await classifier.classifyMnist(new Uint8Array(28 * 28))).free();
  firstPredictionMs = performance.now();
  document.getElementById("backend").textContent = classifier.backend;
  status.textContent = "Ready: draw a digit.";
  if (classifier.backend.includes("WebGPU")) {
    // The WebGPU build says in its backend whether it got the GPU or fell back, and why.
    status.textContent += ` (${classifier.backend})`;
  }
} catch (error) {
  showError(`The model could not be loaded: ${error.message ?? error}`);
}

// Asks the edge worker's /predict instead of the local model. The canvas is still turned into
// the 28x28 input here, by the same Rust code, so only 784 values travel.
class EdgeClassifier {
  backend = "edge worker";

  classifyRgba(rgba, width, height) {
    const input = toMnist(rgba, width, height);
    return input && this.classifyMnist(input);
  }

  async classifyMnist(input) {
    const started = performance.now();
    const response = await fetch("predict", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ pixels: Array.from(input) }),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error ?? `the edge answered ${response.status}`);
    this.backend = `edge worker (Durable Object), model ${answer.model.sha256.slice(0, 12)}`;
    return { ...answer, input, millis: performance.now() - started, free() {} };
  }
}

async function hasWebGpu() {
  try {
    return Boolean(navigator.gpu && (await navigator.gpu.requestAdapter()));
  } catch {
    return false;
  }
}

function clear() {
  clears++;
  clearTimeout(timer);
  ctx.clearRect(0, 0, pad.width, pad.height);
  document.getElementById("digit").textContent = "?";
  document.getElementById("confidence").textContent = "";
  for (const item of fills) {
    item.classList.remove("top");
    item.querySelector(".fill").style.width = "0";
    item.querySelector(".value").textContent = "–";
  }
  seen.getContext("2d").clearRect(0, 0, 28, 28);
  if (classifier) status.textContent = "Ready: draw a digit.";
}

async function classify() {
  if (!classifier) return;
  const image = ctx.getImageData(0, 0, pad.width, pad.height);
  const asked = clears;
  let prediction;
  try {
    prediction = await classifier.classifyRgba(image.data, image.width, image.height);
  } catch (error) {
    showError(error.message);
    return;
  }
  if (!prediction) return; // nothing drawn
  // An answer for a drawing cleared while it was computed is dropped.
  if (asked === clears) show(prediction);
  prediction.free();
}

function show(prediction) {
  const probabilities = prediction.probabilities;
  const digit = prediction.digit;
  document.getElementById("digit").textContent = digit;
  document.getElementById("confidence").textContent = `${(100 * probabilities[digit]).toFixed(1)}% sure`;
  probabilities.forEach((p, d) => {
    fills[d].classList.toggle("top", d === digit);
    fills[d].querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    fills[d].querySelector(".value").textContent = `${(100 * p).toFixed(1)}%`;
    fills[d].dataset.probability = p;
  });
  const input = prediction.input;
  const picture = new ImageData(28, 28);
  for (let i = 0; i < input.length; i++) {
    picture.data.set([input[i], input[i], input[i], 255], 4 * i);
  }
  seen.getContext("2d").putImageData(picture, 0, 0);
  document.getElementById("time").textContent = `${prediction.millis.toFixed(2)} ms`;
  status.classList.remove("error");
  status.textContent = "";
}

function classifySoon() {
  clearTimeout(timer);
  timer = setTimeout(classify, DEBOUNCE_MS);
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * (pad.width / box.width), (event.clientY - box.top) * (pad.height / box.height)];
}

let drawing = false;
pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  const [x, y] = point(event);
  ctx.lineWidth = BRUSH;
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.strokeStyle = "#000";
  ctx.beginPath();
  ctx.moveTo(x, y);
  ctx.lineTo(x, y);
  ctx.stroke();
  event.preventDefault();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const [x, y] = point(event);
  ctx.lineTo(x, y);
  ctx.stroke();
  classifySoon();
});
for (const end of ["pointerup", "pointercancel"]) {
  pad.addEventListener(end, () => {
    if (!drawing) return;
    drawing = false;
    classifySoon();
  });
}
pad.addEventListener("keydown", (event) => {
  if (["Delete", "Backspace", "Escape"].includes(event.key)) {
    clear();
    event.preventDefault();
  }
});
document.getElementById("clear").addEventListener("click", clear);

// For tests and benchmarks driving the page.
// `firstPredictionMs`: from navigation start to the first prediction made; `wasmMemory`: the
// module's linear memory (weights, their decode if any, and the heap).
window.digitReader = { classifier, ready: classifier !== null, firstPredictionMs, wasmMemory: wasm?.memory };
