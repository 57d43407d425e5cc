// Drives Debian's chromium through signing in with the company's OpenID
// provider (started, with the controller, by tests/tests/oidc.rs): the
// page's link to the provider, its form, back signed in; no token in any
// storage or readable cookie; an abort from the page carries the session's
// CSRF header, and the same call without it is refused; signing out ends
// the session. Prints one JSON line of what it saw; exits non-zero on any
// failed expectation.
import { expecter, launch } from "./lib.mjs";

const url = process.env.DIMMER_URL;
const login = process.env.DIMMER_LOGIN;
const rollout = process.env.DIMMER_ROLLOUT;
const seen = {};

const expect = expecter(seen);

const browser = await launch();
try {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${url}/ui/`);
  await page.waitForSelector("#sso:not([hidden])");
  await page.click("#sso");
  await page.waitForSelector("input[name=login]");
  seen.provider_page = page.url();
  await page.fill("input[name=login]", login);
  await page.click("button");
  await page.waitForSelector("#who:not([hidden])", { timeout: 15000 });
  seen.back_at = page.url();
  seen.name = await page.textContent("#who-name");
  seen.role = await page.textContent("#who-role");
  seen.stored = await page.evaluate(() => sessionStorage.length + localStorage.length);
  seen.readable_cookies = await page.evaluate(() => document.cookie);
  expect(seen.name === login, "the provider's name on the page");
  expect(seen.stored === 0, "nothing in the browser's storage");
  expect(seen.readable_cookies === "", "no cookie a script can read");

  seen.without_csrf = await page.evaluate(async (name) =>
    (await fetch(`/v1/rollouts/${name}/pause`, { method: "POST", body: "{}" })).status, rollout);
  expect(seen.without_csrf === 403, "a change without the CSRF header refused");

  await page.goto(`${url}/ui/#/r/${rollout}`);
  await page.waitForSelector("#act-abort");
  await page.click("#act-abort");
  await page.fill("#confirm-reason", "aborted after signing in with the provider");
  await page.click("#confirm-ok");
  await page.waitForFunction(() => document.querySelector("#phase")?.textContent === "aborted", null, { timeout: 10000 });
  seen.phase = await page.textContent("#phase");

  await page.click("#signout");
  seen.session_after = await page.evaluate(async () => (await fetch("/auth/session")).status);
  expect(seen.session_after === 401, "no session after signing out");
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
