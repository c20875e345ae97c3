/**
 * Hostile text against the production bundle on a real carrier-server: message
 * text, broadcast text, a device name and typed phone numbers full of HTML and
 * script, sent by the real `carrier` CLI. Every string must show as text: the
 * page grows no element from it, and the server's Content-Security-Policy
 * reports no violation (an inline handler that got into the DOM would be one).
 * Then a server (or someone between it and the page) that sends oversized,
 * malformed, unsolicited and out-of-order frames and a forged message: the page
 * says so in an alert and keeps its state. A send it breaks off after one of
 * the recipient's devices took the message (a forged list for the next one, a
 * dropped connection) shows as sent, with one warning and no second copy; a
 * dead code's wait is the server's `retry_after_ms`, and none is named
 * without it. Skipped when the binaries are not built (cargo build --bins).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, BrowserContext, Page, WebSocketRoute } from "playwright-core";
import { isolate } from "../src/core/isolate";
import { launchBrowser } from "./harness";
import { Cli, HAVE_BINARIES, RealServer } from "./real";

const WEB = "+12025550151";
const MAL = "+12025550152";

const IMG = `<img src=x onerror="document.title='pwned'">`;
const SCRIPT = `<script>document.title='pwned'</script><b>bold</b>`;
const ATTR = `"><svg onload="document.title='pwned'"> & &amp; &lt;`;

const textbox = (page: Page, name: string) => page.getByRole("textbox", { name, exact: true });
const button = (page: Page, name: string) => page.getByRole("button", { name, exact: true });
const messages = (page: Page) => page.getByRole("list", { name: "Messages", exact: true }).getByRole("listitem");
const conversation = (page: Page, peer: string) => page.getByRole("list", { name: "Conversations", exact: true }).getByRole("listitem").filter({ hasText: peer });

/** Elements that only injected markup would make, anywhere in the page. */
const injected = (page: Page) => page.evaluate(() => document.querySelectorAll("img, svg, b, script:not([src]), [onerror], [onload]").length);
/**
 * Text nodes holding a bidi embedding, override or isolate, and those of them
 * whose element does not isolate its content (dir="auto", <bdi>): an override
 * there would reorder the page's own words after it.
 */
const unisolated = (page: Page) =>
  page.evaluate(() => {
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    let checked = 0;
    const spilling: string[] = [];
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      if (!/[\u202A-\u202E\u2066-\u2068]/.test(n.nodeValue ?? "")) continue;
      checked += 1;
      const parent = n.parentElement!;
      const bidi = getComputedStyle(parent).unicodeBidi;
      if (!["isolate", "isolate-override", "plaintext"].includes(bidi)) spilling.push(`${parent.tagName}.${parent.className}: ${bidi}`);
    }
    return { checked, spilling };
  });
const violations = (page: Page) => page.evaluate(() => (window as unknown as { violations: string[] }).violations);

describe.skipIf(!HAVE_BINARIES)("hostile text from a real server and CLI", () => {
  let server: RealServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let mal: Cli;
  let csp = "";

  beforeAll(async () => {
    server = new RealServer();
    await server.start();
    browser = await launchBrowser();
    mal = Cli.make(server, MAL, "mal");
    await mal.register();
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await context.addInitScript(() => {
      const seen: string[] = [];
      (window as unknown as { violations: string[] }).violations = seen;
      document.addEventListener("securitypolicyviolation", (e) => seen.push(`${e.violatedDirective} ${e.blockedURI}`));
    });
    page = await context.newPage();
    page.on("pageerror", (error) => {
      throw error;
    });
    const response = await page.goto(server.webUrl);
    csp = (await response!.headerValue("content-security-policy")) ?? "";
    await page.locator("#app[data-ready]").waitFor();
    const mark = server.mark();
    await textbox(page, "Phone number").fill(WEB);
    await button(page, "Get code").click();
    await textbox(page, "Code").fill(await server.code(WEB, mark));
    await button(page, "Register").click();
    await page.getByRole("heading", { name: WEB, exact: true }).waitFor();
  });

  afterAll(async () => {
    await context?.close();
    await browser?.close();
    await server?.stop();
  });

  it("is served under a policy that allows only the page's own scripts, styles and socket", () => {
    const directives = new Map(csp.split(";").map((d) => d.trim().split(/\s+/)).map(([name, ...values]) => [name, values.join(" ")]));
    expect(directives.get("default-src")).toBe("'none'");
    expect(directives.get("script-src")).toBe("'self'");
    expect(directives.get("img-src")).toBe("'self'");
    expect(directives.get("require-trusted-types-for")).toBe("'script'");
    expect(directives.get("trusted-types")).toBe("'none'");
    expect(directives.get("style-src")).toBe("'self'");
    expect(directives.get("connect-src")).toBe("'self'");
    expect(directives.get("frame-ancestors")).toBe("'none'");
    expect(directives.get("base-uri")).toBe("'none'");
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|\*/);
  });

  it("shows message text as text, in the conversation and in the list", async () => {
    for (const text of [IMG, SCRIPT, ATTR]) await mal.ok("send", WEB, text);
    await conversation(page, MAL).click();
    for (const text of [IMG, SCRIPT, ATTR]) await messages(page).filter({ hasText: text }).waitFor();
    expect(await conversation(page, MAL).textContent()).toContain(ATTR);
    await textbox(page, "Message").fill(IMG);
    await textbox(page, "Message").press("Enter");
    await messages(page).filter({ hasText: IMG }).nth(1).waitFor();
    expect(await mal.ok("fetch")).toContain(IMG);
    expect(await injected(page)).toBe(0);
    expect(await page.title()).not.toContain("pwned");
  });

  it("shows broadcast text as text", async () => {
    await button(page, "Public").click();
    await mal.ok("broadcast", SCRIPT);
    const posts = page.getByRole("list", { name: "Public", exact: true }).getByRole("listitem");
    await posts.filter({ hasText: SCRIPT }).waitFor();
    await textbox(page, "Broadcast").fill(ATTR);
    await button(page, "Send broadcast").click();
    await posts.filter({ hasText: ATTR }).waitFor();
    expect(await injected(page)).toBe(0);
  });

  it("shows a contact's new device's name as text", async () => {
    const second = Cli.make(server, MAL, "mal-second");
    const { code, done } = await mal.devicesAdd();
    await second.ok("link", MAL, code, "--name", IMG);
    expect((await done).status).toBe(0);
    await conversation(page, MAL).click();
    await textbox(page, "Message").fill("Which device is that?");
    await textbox(page, "Message").press("Enter");
    await page.getByRole("status").filter({ hasText: `${isolate(MAL)} added a device: ${isolate(IMG)}` }).waitFor();
    expect(await second.ok("fetch")).toContain("Which device is that?");
    expect(await injected(page)).toBe(0);
  });

  it("shows a typed phone number that is markup as an error, not as markup", async () => {
    await button(page, "New conversation").click();
    const dialog = page.getByRole("dialog");
    await dialog.getByRole("textbox", { name: "Phone number", exact: true }).fill(IMG);
    await dialog.getByRole("button", { name: "Start", exact: true }).click();
    await dialog.getByRole("alert").filter({ hasText: "not a valid phone number" }).waitFor();
    await dialog.getByRole("button", { name: "Cancel", exact: true }).click();
    expect(await injected(page)).toBe(0);
    expect(await violations(page)).toEqual([]);
  });

  it("keeps a bidi override in a message or a broadcast inside that text", async () => {
    const REVERSED = "\u202Eevil.exe\u2069 pay +1";
    await mal.ok("send", WEB, REVERSED);
    await mal.ok("broadcast", REVERSED);
    await button(page, "Chats").click();
    await conversation(page, MAL).click();
    await messages(page).filter({ hasText: "evil.exe" }).waitFor();
    // The message and the conversation list's preview of it.
    expect(await unisolated(page)).toMatchObject({ checked: expect.any(Number), spilling: [] });
    expect((await unisolated(page)).checked).toBeGreaterThanOrEqual(2);
    // The tab's name carries its count of unseen broadcasts.
    await page.getByRole("navigation", { name: "Views" }).getByRole("button", { name: /^Public/ }).click();
    await page.getByRole("list", { name: "Public", exact: true }).getByRole("listitem").filter({ hasText: "evil.exe" }).waitFor();
    expect(await unisolated(page)).toMatchObject({ spilling: [] });
    expect((await unisolated(page)).checked).toBeGreaterThanOrEqual(2);
    await button(page, "Chats").click();
  });

  it("keeps all of it as text across a reload, with no policy violation at any point", async () => {
    await page.reload();
    await page.getByRole("heading", { name: WEB, exact: true }).waitFor();
    await conversation(page, MAL).click();
    await messages(page).filter({ hasText: SCRIPT }).waitFor();
    expect(await messages(page).filter({ hasText: IMG }).count()).toBe(2);
    expect(await injected(page)).toBe(0);
    expect(await violations(page)).toEqual([]);
    expect(await page.title()).not.toContain("pwned");
  });
});

describe.skipIf(!HAVE_BINARIES)("a hostile server, between the real one and the page", () => {
  const WEB2 = "+12025550153";
  const ANN = "+12025550154";
  let server: RealServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let ann: Cli;
  /** The page's side of its newest WebSocket: what is sent on it reaches the page as if from the server. */
  let toPage: WebSocketRoute | null = null;
  /** Every frame the page sent, in order. */
  const fromPage: string[] = [];
  /** What the server's frames go through on their way to the page: unchanged unless a test says otherwise. */
  let tamper = (frame: string) => frame;
  /**
   * The page's requests, before they reach the server: one it answers (with
   * the page's side of the socket) goes no further. None unless a test says so.
   */
  let intercept: (request: Record<string, unknown>, page: WebSocketRoute) => boolean = () => false;
  const sent = () => fromPage.map((f) => JSON.parse(f) as Record<string, unknown>);
  /** The newest signed device list the server gave for each number. */
  const deviceLists = new Map<string, string>();

  beforeAll(async () => {
    server = new RealServer();
    await server.start();
    browser = await launchBrowser();
    ann = Cli.make(server, ANN, "ann");
    await ann.register();
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await context.routeWebSocket(/\/ws$/, (ws) => {
      const upstream = ws.connectToServer();
      ws.onMessage((frame) => {
        fromPage.push(String(frame));
        if (!intercept(JSON.parse(String(frame)) as Record<string, unknown>, ws)) upstream.send(frame);
      });
      upstream.onMessage((frame) => {
        const f = JSON.parse(String(frame)) as Record<string, unknown>;
        if (f.type === "user" && typeof f.device_list === "string") deviceLists.set(String(f.phone), f.device_list);
        ws.send(tamper(String(frame)));
      });
      toPage = ws;
    });
    page = await context.newPage();
    page.on("pageerror", (error) => {
      throw error;
    });
    await page.goto(server.webUrl);
    await page.locator("#app[data-ready]").waitFor();
    const mark = server.mark();
    await textbox(page, "Phone number").fill(WEB2);
    await button(page, "Get code").click();
    await textbox(page, "Code").fill(await server.code(WEB2, mark));
    await button(page, "Register").click();
    await page.getByRole("heading", { name: WEB2, exact: true }).waitFor();
    await ann.ok("send", WEB2, "Before the trouble");
    await conversation(page, ANN).click();
    await messages(page).filter({ hasText: "Before the trouble" }).waitFor();
  });

  afterAll(async () => {
    await context?.close();
    await browser?.close();
    await server?.stop();
  });

  const warning = () => page.getByRole("alert").filter({ hasText: "The server sent" });
  const dismiss = async () => {
    await warning().getByRole("button", { name: "Dismiss", exact: true }).click();
    await warning().waitFor({ state: "detached" });
  };

  it("says so for frames that are not JSON objects, unknown pushes, a second hello and answers to nothing", async () => {
    for (const [frame, said] of [
      ["<html>not json</html>", "not JSON"],
      ["[1, 2]", "not a JSON object"],
      [JSON.stringify({ type: "registered", phone: "+1" }), 'unexpected "registered"'],
      [JSON.stringify({ type: "hello", challenge: "x", connection: "y", fingerprint: "z" }), "a second hello"],
      [JSON.stringify({ re: 99_999, type: "fetched", messages: [] }), "a request never made"],
    ]) {
      toPage!.send(frame);
      await warning().filter({ hasText: said }).waitFor();
      await dismiss();
    }
  });

  it("says so for malformed and forged messages and broadcasts, and stores nothing from them", async () => {
    toPage!.send(JSON.stringify({ type: "message", id: "not-an-id", from: ANN, envelope: 5 }));
    await warning().filter({ hasText: "a message that is not well formed" }).waitFor();
    await dismiss();
    toPage!.send(JSON.stringify({ type: "broadcast", id: "00".repeat(16), from: "<b>x</b>", sent_at: "soon", text: 1, signature: "" }));
    await warning().filter({ hasText: "a broadcast that is not well formed" }).waitFor();
    await dismiss();
    // Well formed, but signed by no one: a v2 envelope of random bytes, then a broadcast with a bad signature.
    toPage!.send(JSON.stringify({ type: "message", id: "ab".repeat(16), from: ANN, device: 1, envelope: Buffer.alloc(400, 2).toString("base64") }));
    toPage!.send(JSON.stringify({ type: "broadcast", id: "cd".repeat(16), from: ANN, sent_at: Date.now(), text: "Forged broadcast", signature: Buffer.alloc(64, 1).toString("base64") }));
    await page.getByRole("alert").filter({ hasText: "is not signed by their key" }).waitFor();
    expect(await messages(page).count()).toBe(1);
  });

  it("drops a connection that sends a frame over 4 MiB, comes back, and keeps every message", async () => {
    const first = toPage!;
    first.send(JSON.stringify({ type: "message", pad: "x".repeat(4_194_304) }));
    await page.getByRole("alert").filter({ hasText: "a frame over 4194304 bytes" }).waitFor();
    await expect.poll(() => toPage !== first, { timeout: 30_000 }).toBe(true);
    await ann.ok("send", WEB2, "After the trouble");
    await messages(page).filter({ hasText: "After the trouble" }).waitFor();
    await page.reload();
    await page.getByRole("heading", { name: WEB2, exact: true }).waitFor();
    await conversation(page, ANN).click();
    await messages(page).filter({ hasText: "After the trouble" }).waitFor();
    expect(await messages(page).allTextContents()).toEqual([expect.stringContaining("Before the trouble"), expect.stringContaining("After the trouble")]);
    await textbox(page, "Message").fill("All fine here");
    await textbox(page, "Message").press("Enter");
    await messages(page).filter({ hasText: "All fine here" }).waitFor();
    expect(await ann.ok("fetch")).toContain("All fine here");
  });

  it("shows a refused copy the server tells of on the message, marked not delivered, and acknowledges the notice", async () => {
    const before = fromPage.length;
    await textbox(page, "Message").fill("Will this arrive?");
    await textbox(page, "Message").press("Enter");
    const mine = messages(page).filter({ hasText: "Will this arrive?" });
    await mine.filter({ hasText: "Sent" }).waitFor();
    const copy = sent()
      .slice(before)
      .find((f) => f.type === "device_send" && f.to === ANN);
    expect(copy).toBeDefined();
    // What the server queues when Ann's home refuses the copy (src/protocol/notice.rs): tag 0, then JSON.
    const json = JSON.stringify({ type: "undeliverable", id: copy!.id, to: ANN, device: 1, code: "stale_devices", reason: "\u202Ethe device list changed" });
    const notice = "9a".repeat(16);
    toPage!.send(JSON.stringify({ type: "message", id: notice, from: WEB2, envelope: Buffer.concat([Buffer.from([0]), Buffer.from(json)]).toString("base64") }));
    await mine.getByRole("alert").filter({ hasText: "refused" }).waitFor();
    expect(await mine.getByRole("alert").textContent()).toContain("the device list changed");
    await mine.filter({ hasText: "Not delivered" }).waitFor();
    await expect.poll(() => sent().some((f) => f.type === "ack" && (f.ids as string[]).includes(notice))).toBe(true);

    // Under a contact's number, or not JSON: acknowledged, said quietly, nothing marked.
    const forged = "9b".repeat(16);
    toPage!.send(JSON.stringify({ type: "message", id: forged, from: ANN, envelope: Buffer.concat([Buffer.from([0]), Buffer.from(json)]).toString("base64") }));
    await page.getByRole("status").filter({ hasText: "was ignored" }).first().waitFor();
    await expect.poll(() => sent().some((f) => f.type === "ack" && (f.ids as string[]).includes(forged))).toBe(true);
    expect(await messages(page).getByRole("alert").count()).toBe(1);

    // It stays across a reload.
    await page.reload();
    await page.getByRole("heading", { name: WEB2, exact: true }).waitFor();
    await conversation(page, ANN).click();
    await mine.getByRole("alert").filter({ hasText: "refused" }).waitFor();
  });

  it("tells which device a send leaves out when the server forges its prekey, sends nothing, and sends once the keys are as published", async () => {
    const BEA = "+12025550155";
    const bea = Cli.make(server, BEA, "bea");
    await bea.register();
    tamper = (frame) => {
      const f = JSON.parse(frame) as Record<string, unknown>;
      if (f.type !== "user" || f.phone !== BEA || !Array.isArray(f.bundles)) return frame;
      // A bundle is three u16-prefixed parts: certificate, signed prekey, ML-KEM prekey. Flip the signed prekey's last signature byte.
      const bundle = Buffer.from(String(f.bundles[0]), "base64");
      const spkEnd = 2 + bundle.readUInt16BE(0) + 2 + bundle.readUInt16BE(2 + bundle.readUInt16BE(0));
      bundle[spkEnd - 1] ^= 1;
      return JSON.stringify({ ...f, bundles: [bundle.toString("base64"), ...f.bundles.slice(1)] });
    };
    await button(page, "New conversation").click();
    const dialog = page.getByRole("dialog");
    await dialog.getByRole("textbox", { name: "Phone number", exact: true }).fill(BEA);
    await dialog.getByRole("button", { name: "Start", exact: true }).click();
    await page.getByRole("heading", { name: BEA, exact: true }).waitFor();
    await textbox(page, "Message").fill("Forged keys, nothing sent");
    await textbox(page, "Message").press("Enter");
    await page.getByRole("alert").filter({ hasText: `Device 1 of ${isolate(BEA)} gets nothing from this send: its keys were refused (a prekey's signature does not verify).` }).waitFor();
    await page.getByRole("alert").filter({ hasText: `The server offered keys for ${BEA} that do not check out against their account key; nothing was sent.` }).waitFor();
    await messages(page).filter({ hasText: "Forged keys, nothing sent" }).filter({ hasText: "Not sent" }).waitFor();
    expect(sent().some((f) => f.type === "device_send" && f.to === BEA)).toBe(false);

    tamper = (frame) => frame;
    await textbox(page, "Message").fill("Keys as published");
    await textbox(page, "Message").press("Enter");
    await messages(page).filter({ hasText: "Keys as published" }).filter({ hasText: /\bSent\b/ }).waitFor();
    expect(await bea.ok("fetch")).toContain("Keys as published");
  });

  it("shows a message a later step refused as sent, once some device had it, with one warning and no second copy", async () => {
    const CAT = "+12025550156";
    const cat = Cli.make(server, CAT, "cat");
    await cat.register();
    const catPhone = Cli.make(server, CAT, "cat-phone");
    const { code, done } = await cat.devicesAdd();
    await catPhone.ok("link", CAT, code, "--name", "phone");
    expect((await done).status).toBe(0);
    await button(page, "New conversation").click();
    const dialog = page.getByRole("dialog");
    await dialog.getByRole("textbox", { name: "Phone number", exact: true }).fill(CAT);
    await dialog.getByRole("button", { name: "Start", exact: true }).click();
    await page.getByRole("heading", { name: CAT, exact: true }).waitFor();
    const tail = "the message had reached some devices, and was not sent to the rest.";

    // Device 2's copy is answered, in the server's stead, with a stale_devices refusal whose list is another account's.
    const annList = deviceLists.get(ANN);
    expect(annList).toBeDefined();
    intercept = (request, pageSide) => {
      if (request.type !== "device_send" || request.to !== CAT || request.device !== 2) return false;
      const refusal = { re: request.seq, type: "error", code: "stale_devices", message: "the device list changed", device_list: annList, bundles: [] };
      pageSide.send(JSON.stringify(refusal));
      return true;
    };
    const before = fromPage.length;
    await textbox(page, "Message").fill("Partly delivered");
    await textbox(page, "Message").press("Enter");
    const partly = messages(page).filter({ hasText: "Partly delivered" });
    await page.getByRole("alert").filter({ hasText: `The device list of ${CAT} does not check out` }).filter({ hasText: tail }).waitFor();
    await partly.filter({ hasText: /\bSent\b/ }).waitFor();
    expect(await partly.filter({ hasText: "Not sent" }).count()).toBe(0);
    expect(await page.locator(".chat .errors").getByRole("alert").count()).toBe(0);
    const partlySent = sent().slice(before).filter((f) => f.type === "device_send" && f.to === CAT);
    expect(partlySent.map((f) => f.device)).toEqual([1, 2]);
    expect(await cat.ok("fetch")).toContain("Partly delivered");
    expect(await catPhone.ok("fetch")).not.toContain("Partly delivered");
    await page.getByRole("alert").getByRole("button", { name: "Dismiss", exact: true }).click();

    // The connection drops with device 2's copy in flight, after device 1's was answered.
    intercept = (request, pageSide) => {
      if (request.type !== "device_send" || request.to !== CAT || request.device !== 2) return false;
      intercept = () => false;
      void pageSide.close();
      return true;
    };
    await textbox(page, "Message").fill("Connection lost halfway");
    await textbox(page, "Message").press("Enter");
    await page
      .getByRole("alert")
      .filter({ hasText: `The connection to the Carrier server dropped while sending to ${isolate(CAT)}; the message had reached some devices, and may not have reached the rest.` })
      .waitFor();
    const dropped = messages(page).filter({ hasText: "Connection lost halfway" });
    await dropped.filter({ hasText: /\bSent\b/ }).waitFor();
    expect(await dropped.filter({ hasText: "Not sent" }).count()).toBe(0);
    expect(await cat.ok("fetch")).toContain("Connection lost halfway");
  });

  it("tells the wait for a new code the server gives, and names none when the server leaves it out", async () => {
    const DOT = "+12025550157";
    const fresh = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    // The server's code_dead, without its retry_after_ms; its message still names the wait, for people, not to be parsed.
    await fresh.routeWebSocket(/\/ws$/, (ws) => {
      const upstream = ws.connectToServer();
      ws.onMessage((frame) => upstream.send(frame));
      upstream.onMessage((frame) => {
        const f = JSON.parse(String(frame)) as Record<string, unknown>;
        if (f.code === "code_dead") delete f.retry_after_ms;
        ws.send(JSON.stringify(f));
      });
    });
    const other = await fresh.newPage();
    await other.goto(server.webUrl);
    await other.locator("#app[data-ready]").waitFor();
    const mark = server.mark();
    await textbox(other, "Phone number").fill(DOT);
    await button(other, "Get code").click();
    const code = await server.code(DOT, mark);
    const wrong = String((Number(code) + 1) % 1_000_000).padStart(6, "0");
    for (let left = 4; left >= 1; left--) {
      await textbox(other, "Code").fill(wrong);
      await button(other, "Register").click();
      await other.getByRole("alert").filter({ hasText: `${left} ${left === 1 ? "try" : "tries"} left` }).waitFor();
    }
    await textbox(other, "Code").fill(wrong);
    await button(other, "Register").click();
    // The last wrong try: the server says when, and the page tells it.
    await other.getByRole("alert").filter({ hasText: /That code is wrong, and it cannot be used any more\. Wait (59|60|61) minutes, then press Get code for a new one\./ }).waitFor();
    await button(other, "Get code").click();
    await other.getByRole("alert").filter({ hasText: "Too many wrong codes for this number. Wait before you ask for a new code; the server did not say for how long." }).waitFor();
    expect(await other.getByRole("alert").textContent()).not.toContain("hour");
    await fresh.close();
  });
});
