// node web/drive.mjs --url URL [--out DIR] IMAGE...
//
// Opens the page at URL (web/serve.py's address with ?model=...) in headless Chromium (Debian's /usr/bin/chromium,
// or $CHROMIUM) through playwright-core, chooses each IMAGE in the page's file input as a user would, waits for
// the detections and prints one JSON object: {images: [{image, state, status, detections, screenshot}],
// console: [browser console errors]}. With --out, a screenshot of the page per image: DIR/<image stem>.png.
// Exit code 0 when the page reached every image (read "state" for errors), 2 for bad arguments.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, extname, join, resolve } from "node:path";
import { chromium } from "playwright-core";

const TIMEOUT_MS = 180_000; // the WebAssembly runtime and a model compile slowly on a busy 2-core machine
// Chromium on a machine without a network and without a GPU (docs/mobile.md#web): no background connections,
// no GPU process, a fresh empty profile.
const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

function parse(argv) {
  const args = { url: null, out: null, images: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--url") args.url = argv[++i];
    else if (argv[i] === "--out") args.out = argv[++i];
    else args.images.push(resolve(argv[i]));
  }
  if (!args.url || args.images.length === 0) {
    console.error("usage: node web/drive.mjs --url URL [--out DIR] IMAGE...");
    process.exit(2);
  }
  return args;
}

const state = (page) => page.evaluate(() => document.body.dataset.state);

async function main() {
  const args = parse(process.argv.slice(2));
  const profile = mkdtempSync(join(tmpdir(), "retinanet-chromium-"));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: FLAGS,
    viewport: { width: 900, height: 600 },
  });
  const consoleErrors = [];
  const results = [];
  try {
    const page = browser.pages()[0] ?? (await browser.newPage());
    page.on("console", (message) => message.type() === "error" && consoleErrors.push(message.text()));
    page.on("pageerror", (error) => consoleErrors.push(String(error)));
    await page.goto(args.url);
    await page.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.state), null, {
      timeout: TIMEOUT_MS,
    });
    for (const image of args.images) {
      if ((await state(page)) === "error") break;
      await page.evaluate(() => (document.body.dataset.state = "choosing"));
      await page.setInputFiles("#image-file", image);
      await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state), null, {
        timeout: TIMEOUT_MS,
      });
      const result = {
        image,
        state: await state(page),
        status: await page.textContent("#status"),
        detections: JSON.parse(await page.textContent("#detections")),
        screenshot: null,
      };
      if (args.out) {
        result.screenshot = join(resolve(args.out), `${basename(image, extname(image))}.png`);
        await page.screenshot({ path: result.screenshot, fullPage: true });
      }
      results.push(result);
    }
    if (results.length === 0) {
      results.push({ image: null, state: await state(page), status: await page.textContent("#status") });
    }
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
  console.log(JSON.stringify({ images: results, console: consoleErrors }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
