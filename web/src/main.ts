/**
 * Entry point. The production build talks to the page's own server (RemoteCore);
 * the `fake` build mode (`npm run dev`, `npm run build:fake`, end-to-end tests)
 * swaps in the in-memory fake, which Vite leaves out of the production bundle
 * because `import.meta.env.MODE` is a constant there.
 */
import type { Account, ClientCore } from "./core/api";
import { RemoteCore, socketUrl } from "./core/remote";
import { Store } from "./storage/store";
import { h, replaceChildren } from "./ui/dom";
import { Messenger } from "./ui/messenger";
import { onboarding } from "./ui/onboarding";
import "./ui/style.css";

async function createCore(store: Store): Promise<ClientCore> {
  if (import.meta.env.MODE === "fake") {
    const { FakeCore } = await import("./core/fake");
    const core = new FakeCore(store);
    (window as unknown as { carrierFake: unknown }).carrierFake = core.controls;
    return core;
  }
  return new RemoteCore(store, socketUrl(location));
}

async function start(root: HTMLElement): Promise<void> {
  let store: Store;
  try {
    store = await Store.open();
  } catch (error) {
    const reason = error instanceof Error ? error.message : "";
    replaceChildren(root, h("div", { role: "alert", class: "alert" }, `Carrier cannot open this browser's storage, so it cannot keep your keys. ${reason}`));
    return;
  }
  const core = await createCore(store);
  const signedIn = (account: Account) => replaceChildren(root, new Messenger(core, account).element);
  const account = await core.resume();
  if (account) signedIn(account);
  else replaceChildren(root, onboarding(core, signedIn));
  root.dataset.ready = "true";
}

void start(document.getElementById("app")!);
