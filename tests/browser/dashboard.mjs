// Browser test of eddy's dashboard: opens the page of a running `eddy demo` in headless
// chromium (Debian's, driven by playwright-core), waits for live data, checks that the charts
// and tables hold non-empty values that change over time and that the console stays free of
// errors, tries the query form, and saves a screenshot.
//
//   node dashboard.mjs http://127.0.0.1:PORT screenshot.png
//
// Environment: CHROMIUM (the browser, default /usr/bin/chromium), EDDY_BROWSER_TIMEOUT_S
// (limit of each wait, default 30).
import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node dashboard.mjs BASE_URL SCREENSHOT.png");
  process.exit(2);
}
const TIMEOUT_MS = Number(process.env.EDDY_BROWSER_TIMEOUT_S || 30) * 1000;
const log = (msg) => console.error(`[browser-test] ${msg}`);

const problems = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // As root (CI containers) chromium refuses to start with its sandbox.
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1300 } });
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });

  const resp = await page.goto(`${base}/`);
  if (!resp || resp.status() !== 200) throw new Error(`GET / answered ${resp && resp.status()}`);
  if (!(resp.headers()["content-type"] || "").startsWith("text/html")) throw new Error("/ is not HTML");

  // What the test reads off the page: texts of the key figures, the chart paths and tables.
  const snapshot = () => page.evaluate(() => {
    const text = (id) => document.getElementById(id).textContent.trim();
    const rows = (id) => [...document.getElementById(id).tBodies[0].rows]
      .filter((r) => !(r.cells.length === 1 && r.cells[0].classList.contains("muted")))
      .map((r) => [...r.cells].map((c) => c.textContent.trim()));
    const paths = (id) => [...document.querySelectorAll(`#${id} path.line`)].map((p) => p.getAttribute("d"));
    const kpis = Object.fromEntries([...document.querySelectorAll(".kpi .value")].map((e) => [e.id, e.textContent.trim()]));
    return {
      conn: text("conn"),
      kpis,
      charts: {
        rate: paths("chart-rate"),
        delay: paths("chart-delay"),
        dead: paths("chart-dead"),
        freshness: paths("chart-freshness"),
      },
      points: Number(document.getElementById("chart-rate").dataset.points || 0),
      top: rows("top"),
      processes: rows("processes"),
      parts: rows("parts"),
      partitions: rows("partitions"),
      checkpoints: rows("checkpoints"),
      dead: rows("dead"),
      samples: rows("samples"),
    };
  });

  // Polls `f` (async, true when done) every 250 ms until the deadline.
  async function until(what, f) {
    const deadline = Date.now() + TIMEOUT_MS;
    let last;
    while (Date.now() < deadline) {
      last = await snapshot();
      if (f(last)) return last;
      await page.waitForTimeout(250);
    }
    throw new Error(`timed out waiting for ${what}; page shows ${JSON.stringify(last, null, 1)}`);
  }

  const number = (s) => Number(String(s).replace(/[^0-9.\-]/g, ""));
  const live = (s) =>
    s.conn === "live" &&
    number(s.kpis["kpi-events"]) > 0 &&
    s.kpis["kpi-watermark"] !== "–" &&
    s.kpis["kpi-delay"] !== "–" &&
    s.kpis["kpi-freshness"] !== "–" &&
    s.kpis["kpi-rate"] !== "–" &&
    s.top.length > 0 &&
    s.processes.length > 0 &&
    s.charts.rate.length > 0 && s.charts.delay.length > 0 && s.charts.freshness.length > 0 &&
    s.points >= 4 &&
    s.samples.length >= 2 &&
    // The demo writes dead letters (malformed and late events).
    s.dead.length > 0 && s.charts.dead.length > 0;
  const first = await until("live data on every chart and table", live);
  log(`live: ${first.kpis["kpi-events"]} events, ${first.kpis["kpi-rate"]} events/s, top campaign ${first.top[0][1]}`);

  // The figures move: events counted, charts redrawn, new samples, the top list's numbers.
  const moved = await until("the page to change", (s) =>
    number(s.kpis["kpi-events"]) > number(first.kpis["kpi-events"]) &&
    s.charts.rate[0] !== first.charts.rate[0] &&
    s.charts.delay[0] !== first.charts.delay[0] &&
    s.samples[0][0] !== first.samples[0][0] &&
    JSON.stringify(s.top) !== JSON.stringify(first.top));
  log(`moved: ${moved.kpis["kpi-events"]} events, ${moved.points} chart points`);
  for (const row of moved.top) {
    if (!(Number(row[1]) >= 0) || row.slice(2).some((c) => c === "")) throw new Error(`top row ${row} has empty cells`);
  }
  if (!moved.parts.some((r) => r[0] === "source (pipeline)" && r[1] === "ok")) {
    throw new Error(`the parts table shows no live source: ${JSON.stringify(moved.parts)}`);
  }
  if (!moved.parts.some((r) => r[0].startsWith("store memory") && r[1] === "ok")) {
    throw new Error(`the parts table shows no healthy store: ${JSON.stringify(moved.parts)}`);
  }

  // The query form: counts of the last hour, then the first campaign of the top list.
  async function ask(kind, id) {
    await page.selectOption("#q-kind", kind);
    await page.fill("#q-id", id);
    await page.evaluate(() => { document.getElementById("q-result").dataset.status = ""; });
    await page.click("#query button");
    try {
      await page.waitForSelector("#q-result[data-status='200'] table tbody tr", { state: "attached", timeout: TIMEOUT_MS });
    } catch (e) {
      throw new Error(`the ${kind} query got no answer: ${await page.textContent("#query")} ${await page.innerHTML("#q-result")}`);
    }
  }
  await ask("counts", "");
  const campaign = moved.top[0][1];
  await ask("campaign", campaign);
  const answered = await page.textContent("#q-result table tbody tr td");
  if (answered.trim() !== campaign) throw new Error(`the campaign query answered ${answered} for ${campaign}`);
  log(`query form: counts and campaign ${campaign} answered`);

  // A fuller chart for the screenshot.
  await until("a dozen samples", (s) => s.charts.delay[0].split("L").length >= 12);
  await page.screenshot({ path: screenshot, fullPage: true });
  log(`screenshot: ${screenshot}`);
} finally {
  await browser.close();
}

if (problems.length) {
  console.error(problems.join("\n"));
  throw new Error(`${problems.length} console error(s) or failed request(s) on the page`);
}
log("ok");
