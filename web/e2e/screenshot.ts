/**
 * Remakes web/screenshot.png (shown in README.md) from the production bundle on
 * a real carrier-server: a browser user in conversation with two users of the
 * real `carrier` CLI. Run with `npm run screenshot` after `cargo build --bins`.
 * Not part of the test run: it writes a tracked file.
 */
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import { DESKTOP, launchBrowser, openClient } from "./harness";
import { Cli, HAVE_BINARIES, RealServer } from "./real";

const ME = "+12025550101";
const BOB = "+12025550102";
const CAROL = "+12025550103";
const OUT = fileURLToPath(new URL("../screenshot.png", import.meta.url));

const textbox = (page: Page, name: string) => page.getByRole("textbox", { name, exact: true });
const button = (page: Page, name: string) => page.getByRole("button", { name, exact: true });
const messages = (page: Page) => page.getByRole("list", { name: "Messages", exact: true }).getByRole("listitem");
const conversation = (page: Page, peer: string) => page.getByRole("list", { name: "Conversations", exact: true }).getByRole("listitem").filter({ hasText: peer });

let server: RealServer;
let browser: Browser;

beforeAll(async () => {
  if (!HAVE_BINARIES) throw new Error("build the server and the CLI first: cargo build --bins");
  server = new RealServer();
  await server.start();
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

it("takes the README's screenshot", async () => {
  const bob = Cli.make(server, BOB, "bob");
  const carol = Cli.make(server, CAROL, "carol");
  await bob.register();
  await carol.register();
  const { page } = await openClient(browser, server.webUrl, DESKTOP);
  const mark = server.mark();
  await textbox(page, "Phone number").fill(ME);
  await button(page, "Get code").click();
  await textbox(page, "Code").fill(await server.code(ME, mark));
  await button(page, "Register").click();
  await page.getByRole("heading", { name: ME, exact: true }).waitFor();

  await bob.ok("send", ME, "Hi! Are you on Carrier in the browser now?");
  await conversation(page, BOB).click();
  await messages(page).filter({ hasText: "in the browser now" }).waitFor();
  for (const text of ["I am: same keys, same protocol, no install.", "Your messages from the terminal arrive here live."]) {
    await textbox(page, "Message").fill(text);
    await textbox(page, "Message").press("Enter");
    await messages(page).filter({ hasText: text }).filter({ hasText: "Sent" }).waitFor();
  }
  await bob.ok("fetch");
  await bob.ok("send", ME, "Nice. Let's compare safety numbers tomorrow.");
  await messages(page).filter({ hasText: "safety numbers" }).waitFor();
  await carol.ok("send", ME, "Dinner at eight?");
  await carol.ok("send", ME, "Bring the cake");
  await conversation(page, CAROL).filter({ hasText: "2" }).waitFor();
  await textbox(page, "Message").click();
  await page.screenshot({ path: OUT });
});
