// What every browser test shares: Debian's chromium, headless, and the
// check that fails the run naming what was expected and what was seen.
import { chromium } from "playwright-core";

export function expecter(seen) {
  return (ok, what) => {
    if (!ok) throw new Error(`expected ${what}; saw ${JSON.stringify(seen)}`);
  };
}

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
}
