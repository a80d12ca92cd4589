// `cargo xtask bench-web`: classification latency and time to first prediction in headless
// Chromium, against the bundle served at BASE_URL. Prints the timings as one JSON object.
import { chromium } from "playwright-core";

const RUNS = Number(process.env.RUNS ?? 300);
const WARMUP = 200;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const page = await browser.newPage();
await page.goto(process.env.BASE_URL);
await page.waitForFunction(() => window.digitReader?.ready === true);

const result = await page.evaluate(async ({ runs, warmup }) => {
  const { classifier } = window.digitReader;
  // A thick "7" on the 280x280 pad, as the page would pass it.
  const canvas = new OffscreenCanvas(280, 280);
  const ctx = canvas.getContext("2d");
  ctx.lineWidth = 20;
  ctx.lineCap = "round";
  ctx.beginPath();
  ctx.moveTo(70, 60);
  ctx.lineTo(210, 60);
  ctx.lineTo(120, 230);
  ctx.stroke();
  const rgba = ctx.getImageData(0, 0, 280, 280).data;
  // The WebGPU build answers with promises; the CPU builds answer at once and are timed
  // without an await, which would add a task switch to every sample.
  const settle = async (answer) => (answer instanceof Promise ? await answer : answer);
  const first = await settle(classifier.classifyRgba(rgba, 280, 280));
  const { firstPredictionMs } = window.digitReader;
  const isolated = self.crossOriginIsolated;
  const mnist = first.input;
  first.free();

  const time = async (call) => {
    for (let i = 0; i < warmup; i++) (await settle(call())).free();
    const samples = [];
    for (let i = 0; i < runs; i++) {
      const start = performance.now();
      const answer = call();
      const prediction = answer instanceof Promise ? await answer : answer;
      samples.push(performance.now() - start);
      prediction.free();
    }
    samples.sort((a, b) => a - b);
    return { median: samples[Math.floor(runs / 2)], p10: samples[Math.floor(runs / 10)], p90: samples[Math.floor(runs * 0.9)] };
  };
  return {
    firstPredictionMs,
    wasmMemoryBytes: window.digitReader.wasmMemory?.buffer.byteLength ?? null,
    canvas: await time(() => classifier.classifyRgba(rgba, 280, 280)),
    model: await time(() => classifier.classifyMnist(mnist)),
    backend: classifier.backend,
    isolated,
  };
}, { runs: RUNS, warmup: WARMUP });
await browser.close();

// One JSON object on stdout, for `cargo xtask bench-web` to tabulate.
console.log(JSON.stringify({ runs: RUNS, warmup: WARMUP, ...result }));
