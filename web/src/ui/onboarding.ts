/**
 * The first screen: register a number with the code from the server, or link this
 * browser to an existing account with a code from `carrier devices add`.
 */
import type { Account, ClientCore } from "../core/api";
import { asCoreError, needsNewCode, type CoreError } from "../core/errors";
import { h, replaceChildren, showError } from "./dom";

/** A name for this device in the account's device list, e.g. "Chrome on Linux". */
function deviceName(): string {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" : /Chrom/.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const system = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS/.test(ua) ? "macOS" : /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "the web";
  return `${browser} on ${system}`;
}

function field(label: string, input: HTMLInputElement, hint?: string): HTMLElement {
  const id = `f-${label.toLowerCase().replace(/\W+/g, "-")}-${Math.random().toString(36).slice(2, 7)}`;
  input.id = id;
  const hintEl = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hintEl);
}

/** Disables a form while its request runs, and shows the outcome; `failed` hears of a failure once the form is usable again. */
async function busy<T>(form: HTMLFormElement, errors: Element, work: () => Promise<T>, failed?: (error: CoreError) => void): Promise<T | undefined> {
  const controls = Array.from(form.querySelectorAll("input, button")) as (HTMLInputElement | HTMLButtonElement)[];
  controls.forEach((c) => (c.disabled = true));
  form.setAttribute("aria-busy", "true");
  showError(errors, null);
  let failure: CoreError | null = null;
  try {
    return await work();
  } catch (error) {
    failure = asCoreError(error);
    showError(errors, failure.message);
    return undefined;
  } finally {
    controls.forEach((c) => (c.disabled = false));
    form.removeAttribute("aria-busy");
    if (failure) failed?.(failure);
  }
}

export function onboarding(core: ClientCore, done: (account: Account) => void): HTMLElement {
  const card = h("div", { class: "card" });
  const screen = h(
    "main",
    { class: "onboarding" },
    h("div", { class: "brand" }, h("div", { class: "logo", "aria-hidden": "true" }, "C"), h("h1", {}, "Carrier")),
    h("p", { class: "tagline" }, "Private messages, end-to-end encrypted, on servers you can run yourself."),
    card,
  );

  const showRegister = () => {
    const errors = h("div", { class: "errors" });
    const phone = h("input", { type: "tel", name: "phone", autocomplete: "tel", placeholder: "+1 202 555 0101", required: true });
    const code = h("input", { type: "text", name: "code", inputmode: "numeric", autocomplete: "one-time-code", maxlength: 6, placeholder: "123456", required: true });
    const codeHint = h("p", { class: "hint", id: "code-hint" });
    // Two forms, so that Enter in each field presses the button beside it.
    const getCode = h("button", { type: "submit", class: "primary" }, "Get code");
    const phoneForm = h("form", { class: "form" }, field("Phone number", phone), getCode);
    const codeForm = h("form", { class: "form", hidden: true }, field("Code", code), codeHint, h("button", { type: "submit", class: "primary" }, "Register"));
    let canonical = "";
    phoneForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const got = await busy(phoneForm, errors, () => core.requestCode(phone.value));
      if (!got) return;
      canonical = got;
      codeHint.textContent = `Enter the 6-digit code sent for ${got}. It is valid for 5 minutes.`;
      codeForm.hidden = false;
      getCode.className = "secondary";
      code.focus();
    });
    // Back to the state before Get code, with the alert still saying why.
    const askForNewCode = () => {
      codeForm.hidden = true;
      code.value = "";
      getCode.className = "primary";
      getCode.focus();
    };
    codeForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const account = await busy(codeForm, errors, () => core.register(canonical || phone.value, code.value), (error) => {
        if (needsNewCode(error)) askForNewCode();
      });
      if (account) done(account);
    });
    phone.addEventListener("input", () => (canonical = ""));
    const toLink = h("button", { type: "button", class: "link", onclick: showLink }, "Link to an existing account");
    replaceChildren(
      card,
      h("section", { class: "forms", "aria-labelledby": "register-title" }, h("h2", { id: "register-title" }, "Create your account"), phoneForm, codeForm, errors),
      h("div", { class: "alt" }, h("p", {}, "Already use Carrier on another device?"), toLink),
    );
    phone.focus();
  };

  const showLink = () => {
    const errors = h("div", { class: "errors" });
    const phone = h("input", { type: "tel", name: "phone", autocomplete: "tel", placeholder: "+1 202 555 0101", required: true });
    const linkCode = h("input", { type: "text", name: "link-code", autocomplete: "off", spellcheck: "false", placeholder: "abcde-fghij-…", required: true });
    const form = h(
      "form",
      { class: "form", "aria-labelledby": "link-title" },
      h("h2", { id: "link-title" }, "Link this browser"),
      h("p", { class: "hint" }, "On a device that already has your account, run ", h("code", {}, "carrier devices add"), " and type the link code it prints."),
      field("Phone number", phone),
      field("Link code", linkCode),
      h("button", { type: "submit", class: "primary" }, "Link"),
      errors,
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const account = await busy(form, errors, () => core.link(phone.value, linkCode.value, deviceName()));
      if (account) done(account);
    });
    const back = h("button", { type: "button", class: "link", onclick: showRegister }, "Create a new account instead");
    replaceChildren(card, form, h("div", { class: "alt" }, back));
    phone.focus();
  };

  showRegister();
  return screen;
}
