// The page end to end in headless Chromium: real pointer strokes that trace MNIST test
// digits, read back from the page. Run by `cargo xtask test`, which serves the bundle and
// writes the digits; BASE_URL, DIGITS_JSON and CHROMIUM come from it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const BASE_URL = process.env.BASE_URL;
const digits = JSON.parse(readFileSync(process.env.DIGITS_JSON, "utf8"));
let browser, page;
const consoleErrors = [];
const requests = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  page = await browser.newPage({ viewport: { width: 900, height: 800 } });
  page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  page.on("request", (request) => requests.push(request.url()));
  await page.goto(BASE_URL);
  await page.waitForFunction(() => window.digitReader?.ready === true, null, { timeout: 20000 });
});

after(async () => { await browser?.close(); });

/// Strokes along each row's runs of ink, scaled up onto the pad: how a person would fill in
/// the digit with a thick pen. `stroke(from, to)` draws one, with a mouse or a finger.
async function draw(pixels, on = page, stroke = mouseStroke) {
  const box = await on.locator("#pad").boundingBox();
  const scale = box.width / 28;
  const at = (x, y) => [box.x + (x + 0.5) * scale, box.y + (y + 0.5) * scale];
  for (let y = 0; y < 28; y++) {
    let x = 0;
    while (x < 28) {
      if (pixels[y * 28 + x] < 128) { x++; continue; }
      const start = x;
      while (x < 28 && pixels[y * 28 + x] >= 128) x++;
      await stroke(at(start, y), at(x - 1, y));
    }
  }
}

async function mouseStroke(from, to) {
  await page.mouse.move(...from);
  await page.mouse.down();
  await page.mouse.move(...to, { steps: 2 });
  await page.mouse.up();
}

async function readPrediction(on = page) {
  await on.waitForFunction(() => document.getElementById("digit").textContent !== "?");
  await on.waitForTimeout(120); // let the last debounced update land
  return on.evaluate(() => ({
    digit: Number(document.getElementById("digit").textContent),
    probabilities: [...document.querySelectorAll("#bars li")].map((li) => Number(li.dataset.probability)),
    backend: document.getElementById("backend").textContent,
  }));
}

test("reads digits drawn with pointer strokes", async () => {
  let correct = 0;
  const seen = [];
  for (const { label, pixels } of digits) {
    await page.click("#clear");
    await draw(pixels);
    const prediction = await readPrediction();
    const sum = prediction.probabilities.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-4, `probabilities sum to ${sum}`);
    seen.push(`${label}->${prediction.digit}`);
    if (prediction.digit === label) correct++;
  }
  console.log(`read ${correct} of ${digits.length} drawn digits: ${seen.join(" ")}`);
  assert.ok(correct >= 18, `only ${correct} of ${digits.length} right`);
});

test("clears with the keyboard", async () => {
  await page.focus("#pad");
  await page.keyboard.press("Escape");
  assert.equal(await page.textContent("#digit"), "?");
});

test("draws and clears by touch on a phone-sized screen", async () => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true });
  const touchPage = await phone.newPage();
  touchPage.on("pageerror", (error) => consoleErrors.push(String(error)));
  await touchPage.goto(BASE_URL);
  await touchPage.waitForFunction(() => window.digitReader?.ready === true, null, { timeout: 20000 });
  // A finger on a 60 Hz touchscreen, which rests before it lifts. Every touch carries its own
  // time, so Chromium's gesture detection sees the same motion however busy the machine is:
  // a finger lifted while still moving is a fling, and after one headless Chromium dropped the
  // click of the next tap on Clear (11 of 20 times with untimed touches).
  const cdp = await phone.newCDPSession(touchPage);
  let clock = 0; // seconds since the epoch, as CDP's timestamps count them
  const touch = (type, points, afterMs) => {
    clock = Math.max(clock + afterMs / 1000, Date.now() / 1000);
    const touchPoints = points.map(([x, y]) => ({ x, y }));
    return cdp.send("Input.dispatchTouchEvent", { type, touchPoints, timestamp: clock });
  };
  const fingerStroke = async (from, to) => {
    await touch("touchStart", [from], 16);
    await touch("touchMove", [[(from[0] + to[0]) / 2, from[1]]], 16);
    await touch("touchMove", [to], 16);
    await touch("touchEnd", [], 100);
  };
  const tap = async (selector) => {
    const box = await touchPage.locator(selector).boundingBox();
    await touch("touchStart", [[box.x + box.width / 2, box.y + box.height / 2]], 150);
    await touch("touchEnd", [], 50);
  };
  let correct = 0;
  for (const { label, pixels } of digits.slice(0, 4)) {
    await draw(pixels, touchPage, fingerStroke);
    if ((await readPrediction(touchPage)).digit === label) correct++;
    await tap("#clear");
    await touchPage.waitForFunction(() => document.getElementById("digit").textContent === "?", null, { timeout: 5000 });
  }
  // A tap right after a stroke must not wait out a double-tap zoom (300 ms in Chromium):
  // `touch-action: manipulation` is what turns that zoom off. It is checked as a style, since
  // a deadline on the tap fails whenever a busy machine is slow, and this headless Chromium
  // acted on the tap at once even without the style.
  const touchAction = await touchPage.$eval("#clear", (button) => getComputedStyle(button).touchAction);
  assert.equal(touchAction, "manipulation", "Clear can be taken for half of a double-tap zoom");
  assert.ok(correct >= 3, `only ${correct} of 4 digits drawn by touch read right`);
  await phone.close();
});

test("logs no console error and fetches nothing beyond its own server", () => {
  assert.deepEqual(consoleErrors, []);
  const outside = requests.filter((url) => !url.startsWith(BASE_URL));
  assert.deepEqual(outside, []);
});
