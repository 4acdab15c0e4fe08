// Opens the mesh dashboard in Debian's headless Chromium with Playwright
// (playwright-core), waits until every expected topology link is drawn
// with a non-zero rate, keeps a screenshot, and prints what the page
// shows as JSON: links (rate, mTLS, label), RED charts, proxy rows.
//
// Usage: node dashboard_check.js URL SCREENSHOT LINK...
const { chromium } = require("playwright-core");

(async () => {
  const [url, shot, ...want] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    // As root in a test: no sandbox. No traffic past loopback: every
    // other address goes to a proxy that is not there.
    args: [
      "--no-sandbox",
      "--proxy-server=http://127.0.0.1:9",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    await page.goto(url);
    await page.waitForFunction(
      (want) =>
        want.every((k) => {
          const e = document.querySelector(`[data-link="${k}"]`);
          return e && parseFloat(e.dataset.rps) > 0;
        }),
      want,
      { timeout: 60000, polling: 500 },
    );
    const links = await page.$$eval("[data-link]", (es) =>
      es.map((e) => ({
        link: e.dataset.link,
        rps: parseFloat(e.dataset.rps),
        mtls: e.dataset.mtls === "true",
        text: e.textContent,
      })),
    );
    const red = await page.$$eval("[data-red]", (es) => es.map((e) => e.dataset.red));
    const proxies = await page.$$eval("[data-proxy]", (es) =>
      es.map((e) => ({ proxy: e.dataset.proxy, cells: [...e.children].map((c) => c.textContent) })),
    );
    await page.screenshot({ path: shot, fullPage: true });
    console.log(JSON.stringify({ links, red, proxies }));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(String(e));
  process.exit(1);
});
