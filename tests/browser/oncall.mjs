// Drives Debian's chromium through the on-call view of a running
// `dimmer serve` (started, with Envoy and load, by tests/tests/ui.rs):
// a viewer sees the step advance live and has no buttons, and is refused
// when calling an action directly; an operator aborts with a reason and
// sees the abort. Prints one JSON line of what it saw; exits non-zero on
// any failed expectation.
import { expecter, launch } from "./lib.mjs";

const url = process.env.DIMMER_URL;
const viewer = process.env.DIMMER_VIEWER_TOKEN;
const operator = process.env.DIMMER_OPERATOR_TOKEN;
const rollout = process.env.DIMMER_ROLLOUT || "checkout";
const shot = process.env.DIMMER_SCREENSHOT;
const seen = {};

const expect = expecter(seen);

const browser = await launch();
try {
  // Nothing may be fetched from anywhere but the controller.
  const foreign = [];
  const open = async (token, width = 1280) => {
    const ctx = await browser.newContext({ viewport: { width, height: 900 } });
    const page = await ctx.newPage();
    page.on("request", (r) => { if (!r.url().startsWith(url)) foreign.push(r.url()); });
    await page.goto(`${url}/ui/`);
    await page.fill("#token", token);
    await page.click("#signin button");
    await page.waitForSelector("#who:not([hidden])");
    return page;
  };

  // The viewer: the overview lists the rollout, the on-call view advances live.
  const v = await open(viewer);
  await v.waitForSelector("#active");
  seen.overview = await v.textContent("#active");
  expect(seen.overview.includes(rollout), "the rollout in the overview");
  await v.goto(`${url}/ui/#/r/${rollout}`);
  await v.waitForSelector("#step");
  seen.first_step = await v.textContent("#step");
  seen.first_weight = await v.textContent("#weight");
  await v.waitForFunction((first) => document.querySelector("#step")?.textContent !== first, seen.first_step, { timeout: 60000 });
  seen.later_step = await v.textContent("#step");
  seen.later_weight = await v.textContent("#weight");
  expect(seen.later_weight !== seen.first_weight, "the weight to change without a reload");
  seen.viewer_buttons = await v.locator("#actions button").count();
  expect(seen.viewer_buttons === 0, "no action buttons for a viewer");
  expect(await v.locator("#no-actions").count() === 1, "the note that actions need an operator");
  seen.viewer_abort_status = await v.evaluate(async ([name, token]) => {
    const r = await fetch(`/v1/rollouts/${name}/abort`, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: "{}" });
    return r.status;
  }, [rollout, viewer]);
  expect(seen.viewer_abort_status === 403, "the API to refuse a viewer's abort");

  // The operator: abort with a reason, and see it.
  const o = await open(operator);
  await o.goto(`${url}/ui/#/r/${rollout}`);
  await o.waitForSelector("#act-abort");
  await o.waitForFunction(() => document.querySelectorAll("svg.chart polyline").length >= 3);
  // The bound against its tolerance, beside the e-values.
  await o.waitForSelector("#safety svg.chart line.limit", { state: "attached" });
  seen.safety = await o.textContent("#safety h3");
  expect(/errors \+[0-9.]+ pp (≤|>) \+0\.50 pp/.test(seen.safety), "the errors bound against its tolerance on the page");
  if (shot) await o.screenshot({ path: shot, fullPage: true });
  await o.click("#act-abort");
  await o.fill("#confirm-reason", "checkout totals look wrong (from the web UI)");
  await o.click("#confirm-ok");
  await o.waitForFunction(() => document.querySelector("#phase")?.textContent === "aborted", null, { timeout: 10000 });
  seen.operator_phase = await o.textContent("#phase");
  seen.operator_weight = await o.textContent("#weight");
  expect(seen.operator_weight === "0%", "the canary at 0% on the page");
  // The same view on a phone's width is still usable.
  const phone = await open(viewer, 390);
  await phone.goto(`${url}/ui/#/r/${rollout}`);
  await phone.waitForSelector("#phase");
  seen.phone_overflows = await phone.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  expect(!seen.phone_overflows, "no sideways scrolling on a phone");
  // The history view shows the person's abort with its reason.
  await o.goto(`${url}/ui/#/h/${rollout}`);
  await o.waitForSelector("table.records");
  seen.history = await o.textContent("table.records");
  expect(seen.history.includes("from the web UI"), "the abort's reason in the history");
  seen.foreign = foreign;
  expect(foreign.length === 0, "no request to anywhere but the controller");
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
