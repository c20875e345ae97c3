/**
 * The page's contract (issue 13's accessible names) in a real Chromium, against the
 * fake-core build: the other side is played through `window.carrierFake`. Every
 * locator uses a role and an exact accessible name, as a screen reader would.
 */
import { mkdirSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import { DESKTOP, launchBrowser, openClient, OUTPUT_DIR, PHONE, serveDirectory } from "./harness";

const ME = "+12025550101";
const BOB = "+12025550102";
const CAROL = "+12025550103";

let browser: Browser;
let site: { url: string; close: () => Promise<void> };

beforeAll(async () => {
  site = await serveDirectory();
  browser = await launchBrowser();
  mkdirSync(OUTPUT_DIR, { recursive: true });
});

afterAll(async () => {
  await browser?.close();
  await site?.close();
});

/** Calls one of the fake's controls (src/core/fake.ts, FakeControls) inside the page. */
function fake<T>(page: Page, fn: string, ...args: unknown[]): Promise<T> {
  return page.evaluate(([name, rest]) => ((window as unknown as { carrierFake: Record<string, (...a: unknown[]) => unknown> }).carrierFake[name as string](...(rest as unknown[])) as T), [fn, args] as const);
}

const textbox = (page: Page, name: string) => page.getByRole("textbox", { name, exact: true });
const button = (page: Page, name: string) => page.getByRole("button", { name, exact: true });
const messages = (page: Page) => page.getByRole("list", { name: "Messages", exact: true }).getByRole("listitem");
const conversation = (page: Page, peer: string) => page.getByRole("list", { name: "Conversations", exact: true }).getByRole("listitem").filter({ hasText: peer });

async function register(page: Page, phone = ME): Promise<void> {
  await textbox(page, "Phone number").fill(phone.replace(/^(\+1)(\d{3})(\d{3})/, "$1 $2-$3-"));
  await button(page, "Get code").click();
  await textbox(page, "Code").waitFor();
  const code = await fake<string>(page, "lastCode", phone);
  expect(code).toMatch(/^\d{6}$/);
  await textbox(page, "Code").fill(code);
  await button(page, "Register").click();
  await page.getByRole("heading", { name: phone, exact: true }).waitFor();
}

async function startConversation(page: Page, peer: string): Promise<void> {
  await button(page, "New conversation").click();
  const dialog = page.getByRole("dialog");
  await dialog.getByRole("textbox", { name: "Phone number", exact: true }).fill(peer);
  await dialog.getByRole("button", { name: "Start", exact: true }).click();
  await page.getByRole("heading", { name: peer, exact: true }).waitFor();
}

async function sendWithEnter(page: Page, text: string): Promise<void> {
  await textbox(page, "Message").fill(text);
  await textbox(page, "Message").press("Enter");
  await messages(page).filter({ hasText: text }).waitFor();
}

describe("registration", () => {
  it("registers with the code, shows the own number, and keeps the account across a reload", async () => {
    const { context, page } = await openClient(browser, site.url);
    await page.screenshot({ path: `${OUTPUT_DIR}/welcome.png` });
    await register(page);
    await page.reload();
    await page.getByRole("heading", { name: ME, exact: true }).waitFor();
    await context.close();
  });

  it("says so, as an alert, when the code is wrong", async () => {
    const { context, page } = await openClient(browser, site.url);
    await textbox(page, "Phone number").fill(ME);
    await button(page, "Get code").click();
    const code = await fake<string>(page, "lastCode", ME);
    await textbox(page, "Code").fill(code === "000000" ? "111111" : "000000");
    await textbox(page, "Code").press("Enter");
    const alert = page.getByRole("alert");
    await alert.waitFor();
    expect(await alert.textContent()).toBe("That code is wrong. 4 tries left. Check the 6-digit code and try again.");
    expect(await page.getByRole("heading", { name: ME, exact: true }).count()).toBe(0);
    await context.close();
  });

  it("after the last wrong try, says the code cannot be used and goes back to Get code", async () => {
    const { context, page } = await openClient(browser, site.url);
    await textbox(page, "Phone number").fill(ME);
    await button(page, "Get code").click();
    const code = await fake<string>(page, "lastCode", ME);
    const wrong = code === "000000" ? "111111" : "000000";
    for (const left of ["4 tries", "3 tries", "2 tries", "1 try"]) {
      await textbox(page, "Code").fill(wrong);
      await button(page, "Register").click();
      await page.getByRole("alert").filter({ hasText: `That code is wrong. ${left} left.` }).waitFor();
    }
    await textbox(page, "Code").fill(wrong);
    await button(page, "Register").click();
    const spent = page.getByRole("alert").filter({ hasText: "cannot be used any more" });
    await spent.waitFor();
    expect(await spent.textContent()).toBe("That code is wrong, and it cannot be used any more. Wait 60 minutes, then press Get code for a new one.");
    // No code box to try a sixth in: the next step is Get code.
    await textbox(page, "Code").waitFor({ state: "hidden" });
    expect(await button(page, "Register").count()).toBe(0);
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Get code");
    await button(page, "Get code").click();
    const dead = page.getByRole("alert").filter({ hasText: "Too many wrong codes for this number" });
    await dead.waitFor();
    expect(await dead.textContent()).toBe("Too many wrong codes for this number. Wait 60 minutes, then ask for a new code.");
    await context.close();
  });

  it("refuses a number that cannot exist, with a sentence saying how to write one", async () => {
    const { context, page } = await openClient(browser, site.url);
    await textbox(page, "Phone number").fill("202 555 0101");
    await button(page, "Get code").click();
    await page.getByRole("alert").filter({ hasText: "not a valid phone number" }).waitFor();
    await context.close();
  });

  it("links to an existing account with a link code", async () => {
    const { context, page } = await openClient(browser, site.url);
    await button(page, "Link to an existing account").click();
    const code = await fake<string>(page, "linkCode", CAROL);
    await textbox(page, "Phone number").fill(CAROL);
    await textbox(page, "Link code").fill("wrong-code");
    await button(page, "Link").click();
    await page.getByRole("alert").filter({ hasText: "link code does not work" }).waitFor();
    await textbox(page, "Link code").fill(code);
    await button(page, "Link").click();
    await page.getByRole("heading", { name: CAROL, exact: true }).waitFor();
    await context.close();
  });
});

describe("conversations", () => {
  it("sends with Enter, shows incoming messages live, counts unread, and keeps history across a reload", async () => {
    const { context, page } = await openClient(browser, site.url);
    await register(page);
    await startConversation(page, BOB);
    await sendWithEnter(page, "Hello Bob, this is Alice");
    expect(await fake<{ to: string; text: string }[]>(page, "sent")).toEqual([{ to: BOB, text: "Hello Bob, this is Alice" }]);

    await fake(page, "deliver", BOB, "Hi Alice! Got it.");
    await messages(page).filter({ hasText: "Hi Alice! Got it." }).waitFor();

    await fake(page, "deliver", CAROL, "Are you coming tonight?");
    await fake(page, "deliver", CAROL, "Bring the cake");
    await conversation(page, CAROL).filter({ hasText: "2 unread" }).waitFor();
    expect(await conversation(page, BOB).textContent()).not.toContain("unread");
    expect(await page.title()).toBe("(2) Carrier");
    await page.screenshot({ path: `${OUTPUT_DIR}/desktop-chat.png` });

    await page.reload();
    await conversation(page, BOB).click();
    await messages(page).filter({ hasText: "Hi Alice! Got it." }).waitFor();
    expect(await messages(page).allTextContents()).toHaveLength(2);
    await conversation(page, CAROL).click();
    await messages(page).filter({ hasText: "Bring the cake" }).waitFor();
    await page.waitForFunction(() => document.title === "Carrier");
    await context.close();
  });

  it("shows an alert for a number no one uses", async () => {
    const { context, page } = await openClient(browser, site.url);
    await register(page);
    await button(page, "New conversation").click();
    await page.getByRole("dialog").getByRole("textbox", { name: "Phone number", exact: true }).fill("+12025550177");
    await button(page, "Start").click();
    await page.getByRole("dialog").getByRole("alert").filter({ hasText: "No Carrier account has that number" }).waitFor();
    await context.close();
  });

  it("blocks a contact whose key changed until the new key is trusted", async () => {
    const { context, page } = await openClient(browser, site.url);
    await register(page);
    await startConversation(page, BOB);
    await sendWithEnter(page, "before the change");
    const before = await readSafetyNumber(page);

    await fake(page, "changeKey", BOB);
    const alert = page.getByRole("alert").filter({ hasText: "changed" });
    await alert.waitFor();
    expect(await textbox(page, "Message").isDisabled()).toBe(true);
    await fake(page, "deliver", BOB, "sent under the new key");
    expect(await messages(page).filter({ hasText: "sent under the new key" }).count()).toBe(0);
    expect(await readSafetyNumber(page)).not.toBe(before);
    await page.screenshot({ path: `${OUTPUT_DIR}/key-change.png` });

    await button(page, "Trust new key").click();
    await messages(page).filter({ hasText: "sent under the new key" }).waitFor();
    await alert.waitFor({ state: "detached" });
    await sendWithEnter(page, "after trusting");
    expect((await fake<{ text: string }[]>(page, "sent")).map((m) => m.text)).toEqual(["before the change", "after trusting"]);
    await context.close();
  });

  it("tells the user when the server cannot be reached", async () => {
    const { context, page } = await openClient(browser, site.url);
    await register(page);
    await startConversation(page, BOB);
    await fake(page, "setOnline", false);
    await page.getByRole("alert").filter({ hasText: "cannot be reached" }).first().waitFor();
    await textbox(page, "Message").fill("into the void");
    await button(page, "Send").click();
    await messages(page).filter({ hasText: "Not sent" }).waitFor();
    await fake(page, "setOnline", true);
    await page.getByRole("alert").filter({ hasText: "cannot be reached" }).waitFor({ state: "detached" });
    await context.close();
  });
});

async function readSafetyNumber(page: Page): Promise<string> {
  await button(page, "Safety number").click();
  const dialog = page.getByRole("dialog");
  await dialog.getByText(/^\d{5}( \d{5}){11}$/).waitFor();
  const digits = (await dialog.getByText(/^\d{5}( \d{5}){11}$/).textContent())!;
  expect(digits.replace(/ /g, "")).toMatch(/^\d{60}$/);
  await dialog.getByRole("button", { name: "Close", exact: true }).click();
  await dialog.waitFor({ state: "detached" });
  return digits;
}

describe("public broadcasts", () => {
  it("posts a broadcast and shows others' as they arrive", async () => {
    const { context, page } = await openClient(browser, site.url);
    await register(page);
    await button(page, "Public").click();
    await page.getByRole("heading", { name: "Public", exact: true }).waitFor();
    await textbox(page, "Broadcast").fill("Hello, neighbourhood");
    await button(page, "Send broadcast").click();
    const posts = page.getByRole("list", { name: "Public", exact: true }).getByRole("listitem");
    await posts.filter({ hasText: "Hello, neighbourhood" }).waitFor();
    await fake(page, "broadcastFrom", BOB, "Welcome!");
    await posts.filter({ hasText: "Welcome!" }).waitFor();
    await page.screenshot({ path: `${OUTPUT_DIR}/public.png` });
    await context.close();
  });
});

describe("phone-sized window", () => {
  it("shows one pane at a time and goes back to the list", async () => {
    const { context, page } = await openClient(browser, site.url, PHONE);
    await register(page);
    await startConversation(page, BOB);
    expect(await page.getByRole("list", { name: "Conversations", exact: true }).isVisible()).toBe(false);
    await sendWithEnter(page, "From my phone");
    await fake(page, "deliver", BOB, "Nice, it fits the screen");
    await messages(page).filter({ hasText: "it fits" }).waitFor();
    await page.screenshot({ path: `${OUTPUT_DIR}/phone-chat.png` });
    await button(page, "Back to conversations").click();
    await conversation(page, BOB).waitFor();
    await page.screenshot({ path: `${OUTPUT_DIR}/phone-list.png` });
    expect(DESKTOP.width).toBeGreaterThan(PHONE.width);
    await context.close();
  });
});
