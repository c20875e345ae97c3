/**
 * Against a running carrier-server that serves the embedded client (CARRIER_WEB_URL,
 * e.g. http://127.0.0.1:8080/): the production bundle loads under its Content
 * Security Policy and shows the registration contract. Skipped without a server.
 * The conversations with CLI users of issue 13 join here with the v2 core.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import { launchBrowser, openClient, serveDirectory } from "./harness";

const SERVER = process.env.CARRIER_WEB_URL;

describe("the built bundle", () => {
  let browser: Browser;
  let site: { url: string; close: () => Promise<void> } | null = null;
  let url: string;

  beforeAll(async () => {
    if (SERVER) url = SERVER;
    else {
      // Without a server, serve dist/ itself: the page must still load and say it is offline.
      site = await serveDirectory(new URL("../dist", import.meta.url).pathname);
      url = site.url;
    }
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    await site?.close();
  });

  it("loads under its Content Security Policy and shows the registration form", async () => {
    const { context, page } = await openClient(browser, url);
    const violations: string[] = [];
    page.on("console", (m) => {
      if (/Content Security Policy/.test(m.text())) violations.push(m.text());
    });
    await page.getByRole("textbox", { name: "Phone number", exact: true }).waitFor();
    await page.getByRole("button", { name: "Get code", exact: true }).waitFor();
    await page.getByRole("button", { name: "Link to an existing account", exact: true }).waitFor();
    const csp = await page.locator('meta[http-equiv="Content-Security-Policy"]').getAttribute("content");
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("trusted-types 'none'");
    expect(await page.evaluate(() => "carrierFake" in window)).toBe(false);
    expect(violations).toEqual([]);
    await context.close();
  });
});
