// The on-call view under stress, in Debian's chromium, against a running
// `dimmer serve` (started, with Envoy and load, by tests/tests/ui.rs):
// - a viewer holding its whole share of live streams is refused one more,
//   and its page still shows the state from the API, saying it is not live;
// - an operator's page meanwhile shows the state and the abort button, live;
// - right after each step up the proxy is "applying", never "lagging";
// - with the controller frozen the page says it is stale within seconds,
//   and clears by itself when it answers again;
// - an aborted rollout is one click from the overview, filtered by
//   outcome and by team.
// Prints one JSON line of what it saw; exits non-zero on a failed expectation.
import { expecter, launch } from "./lib.mjs";

const url = process.env.DIMMER_URL;
const viewer = process.env.DIMMER_VIEWER_TOKEN;
const operator = process.env.DIMMER_OPERATOR_TOKEN;
const pid = Number(process.env.DIMMER_CONTROLLER_PID);
const share = Number(process.env.DIMMER_STREAMS_PER_PRINCIPAL || 8);
const rollout = "checkout";
const seen = {};

const expect = expecter(seen);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const browser = await launch();
try {
  const open = async (token) => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await ctx.newPage();
    await page.goto(`${url}/ui/`);
    await page.fill("#token", token);
    await page.click("#signin button");
    await page.waitForSelector("#who:not([hidden])");
    return page;
  };

  // A viewer (a wall screen gone wrong) holds every stream its token may:
  // from Node, which, unlike a browser, opens as many connections as asked.
  const held = [];
  const hogOne = () => fetch(`${url}/v1/events`, { headers: { authorization: `Bearer ${viewer}` } });
  for (let i = 0; i < share; i++) {
    const r = await hogOne();
    if (r.ok) held.push(r.body.getReader());
  }
  const more = await hogOne();
  seen.hog_streams = { ok: held.length, more: more.status, why: (await more.json()).error };
  expect(seen.hog_streams.ok === share && seen.hog_streams.more === 429, "the viewer's share, then 429");

  // Its own on-call page: refused a stream, yet showing the state, and saying so.
  const v = await open(viewer);
  await v.goto(`${url}/ui/#/r/${rollout}`);
  await v.waitForSelector("#phase");
  await v.waitForSelector("#live:not([hidden])", { timeout: 5000 });
  seen.viewer_banner = await v.textContent("#live");
  expect(seen.viewer_banner.includes("Not live") && seen.viewer_banner.includes("refused"), "the refused viewer told it is not live");

  // The operator's page: state, abort button and live updates.
  const o = await open(operator);
  await o.goto(`${url}/ui/#/r/${rollout}`);
  await o.waitForSelector("#phase");
  await o.waitForSelector("#act-abort");
  const before = await o.textContent("#in-step");
  await o.waitForFunction((b) => document.querySelector("#in-step")?.textContent !== b, before, { timeout: 8000 });
  seen.operator_live = await o.isHidden("#live");
  expect(seen.operator_live, "the operator's page live");

  // Step ups: the proxy applying, never lagging, for a whole step or two.
  const firstStep = await o.textContent("#step");
  seen.lagging_seen = [];
  seen.applying_seen = 0;
  const until = Date.now() + 12000;
  while (Date.now() < until) {
    const lag = await o.$("#lagging");
    if (lag) seen.lagging_seen.push(await lag.textContent());
    if (await o.$("#applying")) seen.applying_seen++;
    await sleep(100);
  }
  seen.steps = [firstStep, await o.textContent("#step")];
  expect(seen.steps[0] !== seen.steps[1], "a step up while watching");
  expect(seen.lagging_seen.length === 0, "no proxy shown lagging within its poll interval");

  // The controller freezes: the page says so within seconds, then recovers.
  process.kill(pid, "SIGSTOP");
  const frozeAt = Date.now();
  try {
    await o.waitForSelector("#live:not([hidden])", { timeout: 8000 });
    seen.stale_after_ms = Date.now() - frozeAt;
    seen.stale_banner = await o.textContent("#live");
    seen.marked_old = await o.evaluate(() => document.querySelector("#main").classList.contains("stale"));
  } finally {
    process.kill(pid, "SIGCONT");
  }
  expect(seen.stale_after_ms <= 6000 && seen.marked_old, "the banner within seconds, the numbers marked old");
  const thawedAt = Date.now();
  await o.waitForSelector("#live", { state: "hidden", timeout: 10000 });
  seen.live_again_after_ms = Date.now() - thawedAt;

  // Abort, then find it from the overview in one click.
  await o.click("#act-abort");
  await o.fill("#confirm-reason", "stress test over (from the web UI)");
  await o.click("#confirm-ok");
  await o.waitForFunction(() => document.querySelector("#phase")?.textContent === "aborted", null, { timeout: 10000 });
  await o.goto(`${url}/ui/#/`);
  await o.waitForSelector(`#ended a[href="#/r/${rollout}"]`);
  seen.ended = await o.textContent("#ended");
  expect(seen.ended.includes("aborted") && seen.ended.includes("deploy-bot"), "the abort listed with who decided");
  await o.click('#ended-filter button[data-outcome="completed"]');
  seen.completed_filter = await o.textContent("#main");
  expect(!(await o.$(`#ended a[href="#/r/${rollout}"]`)), "the outcome filter to hide it");
  await o.click('#ended-filter button[data-outcome="aborted"]');
  // By team: another team's aborted rollout is listed too, and each team's
  // filter shows its own only.
  expect(!!(await o.$('#ended a[href="#/r/search-ui"]')), "the other team's aborted rollout listed");
  await o.click('#ended-team-filter button[data-team="payments"]');
  seen.team_filter = await o.textContent("#ended");
  expect(!(await o.$('#ended a[href="#/r/search-ui"]')) && !!(await o.$(`#ended a[href="#/r/${rollout}"]`)),
    "the team filter to keep payments' rollout and hide search's");
  await o.click('#ended-team-filter button[data-team="search"]');
  expect(!!(await o.$('#ended a[href="#/r/search-ui"]')) && !(await o.$(`#ended a[href="#/r/${rollout}"]`)),
    "the team filter to keep search's rollout and hide payments'");
  await o.click('#ended-team-filter button[data-team="payments"]');
  await o.click(`#ended a[href="#/r/${rollout}"]`);
  await o.waitForFunction(() => document.querySelector("#phase")?.textContent === "aborted", null, { timeout: 5000 });
  seen.one_click = true;
  for (const r of held) r.cancel().catch(() => {});
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
