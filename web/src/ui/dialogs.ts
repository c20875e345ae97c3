/** Modal dialogs: starting a conversation, and comparing a safety number. */
import type { ClientCore } from "../core/api";
import { asCoreError } from "../core/errors";
import { h, showError } from "./dom";

function modal(titleId: string, ...content: Node[]): HTMLDialogElement {
  const dialog = h("dialog", { "aria-labelledby": titleId, class: "dialog" }, ...content);
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/** Asks for a number; resolves the conversation through the core and hands back its canonical phone. */
export function newConversationDialog(core: ClientCore, opened: (peer: string) => void): void {
  const phone = h("input", { type: "tel", id: "new-phone", autocomplete: "off", placeholder: "+1 202 555 0102", required: true });
  const errors = h("div", { class: "errors" });
  const start = h("button", { type: "submit", class: "primary" }, "Start");
  const form = h(
    "form",
    { class: "form" },
    h("div", { class: "field" }, h("label", { for: "new-phone" }, "Phone number"), phone),
    errors,
    h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: () => dialog.close() }, "Cancel"), start),
  );
  const dialog = modal("new-title", h("h2", { id: "new-title" }, "New conversation"), form);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    start.disabled = true;
    showError(errors, null);
    try {
      const peer = await core.startConversation(phone.value);
      dialog.close();
      opened(peer);
    } catch (error) {
      showError(errors, asCoreError(error).message);
      phone.focus();
    } finally {
      start.disabled = false;
    }
  });
  phone.focus();
}

export function safetyNumberDialog(core: ClientCore, peer: string): void {
  const number = h("p", { class: "safety-number", "aria-live": "polite" }, "Computing…");
  const dialog = modal(
    "safety-title",
    h("h2", { id: "safety-title" }, "Safety number"),
    h("p", {}, "Your safety number with ", h("bdi", {}, peer), ":"),
    number,
    h("p", { class: "hint" }, "Compare it with the number ", h("bdi", {}, peer), " sees, in person or on a call you trust. If both match, no one is in the middle of your conversation."),
    h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onclick: () => dialog.close() }, "Close")),
  );
  core.safetyNumber(peer).then(
    (digits) => number.replaceChildren(...digits.split(" ").flatMap((group, i) => [i ? " " : "", h("span", {}, group)])),
    (error) => number.replaceWith(h("div", { role: "alert", class: "alert" }, asCoreError(error).message)),
  );
}
