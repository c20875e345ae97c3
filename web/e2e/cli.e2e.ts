/**
 * The production bundle served by a real carrier-server, talking protocol v2 with
 * the real `carrier` CLI: registration with the code from the server's console,
 * messages both ways with live delivery, a reload, safety numbers, a key change,
 * broadcasts, and a browser linked as a second device of a CLI account. Skipped
 * when the binaries are not built (cargo build --bins).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { launchBrowser, openClient } from "./harness";
import { Cli, HAVE_BINARIES, RealServer } from "./real";

const WEB = "+12025550141";
const ANN = "+12025550142";
const CAROL = "+12025550143";
const DAN = "+12025550144";

const textbox = (page: Page, name: string) => page.getByRole("textbox", { name, exact: true });
const button = (page: Page, name: string) => page.getByRole("button", { name, exact: true });
const messages = (page: Page) => page.getByRole("list", { name: "Messages", exact: true }).getByRole("listitem");
const conversation = (page: Page, peer: string) => page.getByRole("list", { name: "Conversations", exact: true }).getByRole("listitem").filter({ hasText: peer });

/** The page's warnings and errors go to the test's output, to tell what went wrong. */
async function open(browser: Browser, url: string): Promise<{ context: BrowserContext; page: Page }> {
  const opened = await openClient(browser, url);
  opened.page.on("console", (m) => {
    if ((m.type() === "warning" || m.type() === "error") && !m.text().startsWith("WebSocket connection to")) console.log(`[browser ${m.type()}] ${m.text()}`);
  });
  return opened;
}

async function register(server: RealServer, page: Page, phone: string): Promise<void> {
  const mark = server.mark();
  await textbox(page, "Phone number").fill(phone);
  await button(page, "Get code").click();
  await textbox(page, "Code").waitFor();
  await textbox(page, "Code").fill(await server.code(phone, mark));
  await button(page, "Register").click();
  await page.getByRole("heading", { name: phone, exact: true }).or(page.getByRole("alert")).first().waitFor();
  expect(await page.getByRole("alert").allTextContents()).toEqual([]);
}

async function readSafetyNumber(page: Page): Promise<string> {
  await button(page, "Safety number").click();
  const dialog = page.getByRole("dialog");
  const digits = dialog.getByText(/^\d{5}( \d{5}){11}$/);
  await digits.waitFor();
  const shown = (await digits.textContent())!;
  await dialog.getByRole("button", { name: "Close", exact: true }).click();
  await dialog.waitFor({ state: "detached" });
  return shown.replace(/\s/g, "");
}

describe.skipIf(!HAVE_BINARIES)("the browser and the carrier CLI on a real server", () => {
  let server: RealServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let ann: Cli;

  beforeAll(async () => {
    server = new RealServer();
    await server.start();
    browser = await launchBrowser();
    ann = Cli.make(server, ANN, "ann");
    await ann.register();
  });

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  it("registers with the code from the server's console", async () => {
    ({ context, page } = await open(browser, server.webUrl));
    await register(server, page, WEB);
  });

  it("shows a CLI user's message live, and the CLI fetches the reply", async () => {
    await ann.ok("send", WEB, "Hello from the terminal");
    await conversation(page, ANN).waitFor();
    await conversation(page, ANN).click();
    await messages(page).filter({ hasText: "Hello from the terminal" }).waitFor();
    await textbox(page, "Message").fill("Hello from the browser");
    await textbox(page, "Message").press("Enter");
    await messages(page).filter({ hasText: "Hello from the browser" }).waitFor();
    expect(await ann.ok("fetch")).toContain("Hello from the browser");
    // Live, in an open conversation: the next one appears without any action.
    await ann.ok("send", WEB, "And another one");
    await messages(page).filter({ hasText: "And another one" }).waitFor();
  });

  it("keeps the account, the conversations and the sessions across a reload", async () => {
    await page.reload();
    await page.getByRole("heading", { name: WEB, exact: true }).waitFor();
    await conversation(page, ANN).click();
    await messages(page).filter({ hasText: "Hello from the terminal" }).waitFor();
    await messages(page).filter({ hasText: "Hello from the browser" }).waitFor();
    await ann.ok("send", WEB, "After your reload");
    await messages(page).filter({ hasText: "After your reload" }).waitFor();
    await textbox(page, "Message").fill("Still here");
    await button(page, "Send").click();
    await messages(page).filter({ hasText: "Still here" }).waitFor();
    expect(await ann.ok("fetch")).toContain("Still here");
  });

  it("shows the same safety number as carrier safety-number", async () => {
    const cli = (await ann.ok("safety-number", WEB)).replace(/\D/g, "");
    expect(cli).toMatch(/^\d{60}$/);
    expect(await readSafetyNumber(page)).toBe(cli);
  });

  it("shows a broadcast from the CLI in Public, and sends one the server accepts", async () => {
    await button(page, "Public").click();
    await page.getByRole("heading", { name: "Public", exact: true }).waitFor();
    await ann.ok("broadcast", "Hello, neighbourhood");
    const posts = page.getByRole("list", { name: "Public", exact: true }).getByRole("listitem");
    await posts.filter({ hasText: "Hello, neighbourhood" }).waitFor();
    // The server checks the signature against the account key (`forbidden` otherwise, shown as an alert).
    await textbox(page, "Broadcast").fill("Hello from the browser, everyone");
    await button(page, "Send broadcast").click();
    await posts.filter({ hasText: "Hello from the browser, everyone" }).waitFor();
    expect(await page.getByRole("alert").count()).toBe(0);
  });

  it("holds a changed key's messages until Trust new key", async () => {
    await conversation(page, ANN).click();
    const again = Cli.make(server, ANN, "ann-again");
    await again.register();
    await again.ok("send", WEB, "My new key says hello");
    const alert = page.getByRole("alert").filter({ hasText: "changed" });
    await alert.waitFor();
    expect(await messages(page).filter({ hasText: "My new key says hello" }).count()).toBe(0);
    // Nothing goes to that contact meanwhile: the composer is off until the key is trusted.
    expect(await textbox(page, "Message").isDisabled()).toBe(true);
    await button(page, "Trust new key").click();
    await alert.waitFor({ state: "detached" });
    await messages(page).filter({ hasText: "My new key says hello" }).waitFor();
    const cli = (await again.ok("safety-number", WEB)).replace(/\D/g, "");
    expect(await readSafetyNumber(page)).toBe(cli);
    await textbox(page, "Message").fill("Welcome back");
    await textbox(page, "Message").press("Enter");
    await messages(page).filter({ hasText: "Welcome back" }).waitFor();
    const fetched = await again.ok("fetch");
    expect(fetched).toContain("Welcome back");
    await context.close();
  });

  it("links as a second device of a CLI account and receives what the account receives", async () => {
    const carol = Cli.make(server, CAROL, "carol");
    await carol.register();
    const dan = Cli.make(server, DAN, "dan");
    await dan.register();
    const { context: second, page: linked } = await open(browser, server.webUrl);
    await button(linked, "Link to an existing account").click();
    const { code, done } = await carol.devicesAdd();
    await textbox(linked, "Phone number").fill(CAROL);
    await textbox(linked, "Link code").fill(code);
    await button(linked, "Link").click();
    await linked.getByRole("heading", { name: CAROL, exact: true }).waitFor();
    expect((await done).status).toBe(0);

    await dan.ok("send", CAROL, "To both of your devices");
    await conversation(linked, DAN).click();
    await messages(linked).filter({ hasText: "To both of your devices" }).waitFor();
    expect(await carol.ok("fetch")).toContain("To both of your devices");

    // What the account sends from the terminal shows here too, as sent.
    await carol.ok("send", DAN, "Sent from the terminal");
    await messages(linked).filter({ hasText: "Sent from the terminal" }).waitFor();
    // And what this browser sends reaches the recipient.
    await textbox(linked, "Message").fill("Sent from the browser");
    await textbox(linked, "Message").press("Enter");
    await messages(linked).filter({ hasText: "Sent from the browser" }).waitFor();
    expect(await dan.ok("fetch")).toContain("Sent from the browser");
    await second.close();
  });

  it("says so, as an alert, for a wrong code and a number no one uses", async () => {
    const { context: third, page: fresh } = await open(browser, server.webUrl);
    const mark = server.mark();
    await textbox(fresh, "Phone number").fill("+12025550149");
    await button(fresh, "Get code").click();
    const code = await server.code("+12025550149", mark);
    await textbox(fresh, "Code").fill(code === "000000" ? "111111" : "000000");
    await button(fresh, "Register").click();
    const wrong = fresh.getByRole("alert").filter({ hasText: "code is wrong" });
    await wrong.waitFor();
    expect(await wrong.textContent()).toBe("That code is wrong. 4 tries left. Check the 6-digit code and try again.");
    await textbox(fresh, "Code").fill(code);
    await button(fresh, "Register").click();
    await fresh.getByRole("heading", { name: "+12025550149", exact: true }).waitFor();
    await button(fresh, "New conversation").click();
    await fresh.getByRole("dialog").getByRole("textbox", { name: "Phone number", exact: true }).fill("+12025550177");
    await button(fresh, "Start").click();
    await fresh.getByRole("dialog").getByRole("alert").filter({ hasText: "No Carrier account has that number" }).waitFor();
    await third.close();
  });

  it("after the last wrong try, says the code cannot be used and goes back to Get code", async () => {
    const { context: spentContext, page: fresh } = await open(browser, server.webUrl);
    const phone = "+12025550151";
    const mark = server.mark();
    await textbox(fresh, "Phone number").fill(phone);
    await button(fresh, "Get code").click();
    const code = await server.code(phone, mark);
    const wrong = code === "000000" ? "111111" : "000000";
    for (const left of ["4 tries", "3 tries", "2 tries", "1 try"]) {
      await textbox(fresh, "Code").fill(wrong);
      await button(fresh, "Register").click();
      await fresh.getByRole("alert").filter({ hasText: `That code is wrong. ${left} left.` }).waitFor();
    }
    await textbox(fresh, "Code").fill(wrong);
    await button(fresh, "Register").click();
    const spent = fresh.getByRole("alert").filter({ hasText: "cannot be used any more" });
    await spent.waitFor();
    expect(await spent.textContent()).toBe("That code is wrong, and it cannot be used any more. Wait 60 minutes, then press Get code for a new one.");
    await textbox(fresh, "Code").waitFor({ state: "hidden" });
    expect(await button(fresh, "Register").count()).toBe(0);
    expect(await fresh.evaluate(() => document.activeElement?.textContent)).toBe("Get code");
    // The server agrees: the same key gets no new code in the window.
    await button(fresh, "Get code").click();
    const dead = fresh.getByRole("alert").filter({ hasText: "Too many wrong codes for this number" });
    await dead.waitFor();
    expect(await dead.textContent()).toBe("Too many wrong codes for this number. Wait 60 minutes, then ask for a new code.");
    await spentContext.close();
  });

  it("carries messages between two browsers, as two users", async () => {
    const one = await open(browser, server.webUrl);
    const two = await open(browser, server.webUrl);
    await register(server, one.page, "+12025550145");
    await register(server, two.page, "+12025550146");
    await button(one.page, "New conversation").click();
    await one.page.getByRole("dialog").getByRole("textbox", { name: "Phone number", exact: true }).fill("+12025550146");
    await one.page.getByRole("dialog").getByRole("button", { name: "Start", exact: true }).click();
    await one.page.getByRole("heading", { name: "+12025550146", exact: true }).waitFor();
    await textbox(one.page, "Message").fill("Browser to browser");
    await textbox(one.page, "Message").press("Enter");
    await conversation(two.page, "+12025550145").click();
    await messages(two.page).filter({ hasText: "Browser to browser" }).waitFor();
    await textbox(two.page, "Message").fill("And back");
    await textbox(two.page, "Message").press("Enter");
    await messages(one.page).filter({ hasText: "And back" }).waitFor();
    await one.context.close();
    await two.context.close();
  });

  it("says the server cannot be reached, as an alert, when it is gone", async () => {
    const { context: last, page: fresh } = await open(browser, server.webUrl);
    await textbox(fresh, "Phone number").waitFor();
    await server.stop();
    await textbox(fresh, "Phone number").fill("+12025550148");
    await button(fresh, "Get code").click();
    await fresh.getByRole("alert").filter({ hasText: "cannot be reached" }).waitFor();
    await last.close();
  });
});
