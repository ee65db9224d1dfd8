// Opens each UI workflow in ComfyUI's real front end (headless Chromium via playwright-core) and
// prints JSON per file: node types, nodes the front end could not resolve, any error dialog, and the
// text of the rendered markdown notes.
// usage: node open_workflows.mjs URL SCREENSHOT_DIR workflow.json...
import fs from "node:fs";
import path from "node:path";

const [url, shots, ...files] = process.argv.slice(2);
// playwright-core lives in the cached environment, not in the repository (PLAYWRIGHT_CORE = its index.mjs)
const { chromium } = await import(process.env.PLAYWRIGHT_CORE || "playwright-core");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1800, height: 1000 } });
const consoleErrors = [];
page.on("pageerror", (e) => consoleErrors.push(String(e)));
await page.goto(url, { waitUntil: "domcontentloaded", timeout: 120000 });
await page.waitForFunction(() => window.app && window.app.graph && window.app.loadGraphData, null, { timeout: 120000 });
await page.waitForTimeout(1500);
const results = [];
for (const file of files) {
  const graph = JSON.parse(fs.readFileSync(file, "utf8"));
  const report = await page.evaluate(async (g) => {
    await window.app.loadGraphData(g, true, true, null);
    await new Promise((r) => setTimeout(r, 1500));
    const nodes = window.app.graph.nodes || window.app.graph._nodes;
    const visible = (sel, length = 300) => [...document.querySelectorAll(sel)]
      .filter((d) => d.offsetParent !== null).map((d) => d.innerText.slice(0, length));
    const dialogs = visible(".p-dialog, .comfy-modal");
    const toasts = visible(".p-toast-message");
    const notes = visible(".comfy-markdown", 6000);  // rendered MarkdownNote widgets
    return {
      notes,
      nodes: nodes.map((n) => ({ id: n.id, type: n.type, resolved: !!(n.constructor && n.constructor.nodeData),
                                  widgets: (n.widgets || []).length, has_errors: !!n.has_errors })),
      dialogs,
      toasts,
    };
  }, graph);
  const name = path.basename(file, ".json");
  await page.screenshot({ path: path.join(shots, `${name}.png`) });
  // close dialogs and toasts so the next file starts clean
  await page.keyboard.press("Escape");
  await page.evaluate(() => document.querySelectorAll(".p-toast-message").forEach((t) => t.remove()));
  results.push({ file: name, ...report });
}
console.log(JSON.stringify({ results, consoleErrors }));
await browser.close();
