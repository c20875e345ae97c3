/** One conversation: its messages, the composer, and the key-change warning. */
import type { ClientCore, MessageRecord, Refusal } from "../core/api";
import { asCoreError } from "../core/errors";
import { safetyNumberDialog } from "./dialogs";
import { h, paneHeader, replaceChildren, showError } from "./dom";
import { initials, isoTime, messageTime } from "./format";

const STATUS: Record<MessageRecord["status"], string> = {
  sending: "Sending…",
  sent: "Sent",
  failed: "Not sent",
  received: "",
};

/** A refused copy, told where the message is: which device, and the refusing server's reason. */
function refusalItem(peer: string, r: Refusal): HTMLParagraphElement {
  return h(
    "p",
    { role: "alert", class: "refusal" },
    "Not delivered to device ",
    String(r.device),
    " of ",
    h("bdi", {}, peer),
    ": refused by their server (",
    r.code,
    "): ",
    h("bdi", {}, r.reason || r.code),
  );
}

function messageItem(m: MessageRecord): HTMLLIElement {
  const refused = m.undelivered ?? [];
  const status = refused.length ? "Not delivered" : STATUS[m.status];
  const failed = m.status === "failed" || refused.length > 0;
  return h(
    "li",
    { class: `msg ${m.direction}${failed ? " failed" : ""}` },
    // dir="auto" isolates the sender's text: a bidi override in it cannot reorder what follows.
    h("p", { class: "text", dir: "auto" }, m.text),
    ...refused.map((r) => refusalItem(m.peer, r)),
    h(
      "p",
      { class: "meta" },
      h("time", { datetime: isoTime(m.sentAt) }, messageTime(m.sentAt)),
      status ? h("span", { class: "status" }, ` · ${status}`) : null,
    ),
  );
}

export class ChatView {
  readonly element: HTMLElement;
  private readonly title = h("h2", { class: "peer", dir: "auto" });
  private readonly list = h("ol", { class: "messages", "aria-label": "Messages" });
  private readonly warning = h("div", { class: "warning-slot" });
  private readonly errors = h("div", { class: "errors" });
  private readonly input = h("textarea", { id: "composer", rows: 1, placeholder: "Write a message", autocomplete: "off" });
  private readonly sendButton = h("button", { type: "submit", class: "send" }, "Send");
  private readonly avatar = h("div", { class: "avatar", "aria-hidden": "true" });
  private peer = "";
  private renderedFor = "";

  constructor(
    private readonly core: ClientCore,
    back: () => void,
  ) {
    const form = h(
      "form",
      { class: "composer" },
      h("label", { for: "composer", class: "visually-hidden" }, "Message"),
      this.input,
      this.sendButton,
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.send();
    });
    // Enter sends; Shift+Enter starts a new line (and IME composition is left alone).
    this.input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        void this.send();
      }
    });
    this.input.addEventListener("input", () => this.autosize());
    this.element = h(
      "section",
      { class: "chat", "aria-labelledby": "chat-title" },
      paneHeader(
        back,
        this.avatar,
        this.title,
        h("button", { type: "button", class: "secondary small", onclick: () => safetyNumberDialog(this.core, this.peer) }, "Safety number"),
      ),
      this.list,
      this.warning,
      this.errors,
      form,
    );
    this.title.id = "chat-title";
  }

  get current(): string {
    return this.peer;
  }

  async show(peer: string): Promise<void> {
    if (peer !== this.peer) {
      this.peer = peer;
      this.input.value = "";
      showError(this.errors, null);
    }
    this.title.textContent = peer;
    this.avatar.textContent = initials(peer);
    await Promise.all([this.refreshMessages(), this.refreshContact()]);
  }

  focusComposer(): void {
    if (!this.input.disabled) this.input.focus();
  }

  async refreshMessages(): Promise<void> {
    const peer = this.peer;
    const messages = await this.core.history(peer);
    if (peer !== this.peer) return;
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    replaceChildren(this.list, ...messages.map(messageItem));
    if (messages.length === 0) this.list.append(h("li", { class: "empty" }, "No messages yet. Say hello!"));
    if (atBottom || this.renderedFor !== peer) this.list.scrollTop = this.list.scrollHeight;
    this.renderedFor = peer;
  }

  /** Shows or clears the key-change warning; while it shows, nothing can be sent. */
  async refreshContact(): Promise<void> {
    const peer = this.peer;
    const contact = await this.core.contact(peer);
    if (peer !== this.peer) return;
    const changed = contact?.keyChanged ?? false;
    this.input.disabled = this.sendButton.disabled = changed;
    if (!changed) {
      replaceChildren(this.warning);
      return;
    }
    const trust = h("button", { type: "button", class: "danger" }, "Trust new key");
    trust.addEventListener("click", async () => {
      trust.disabled = true;
      try {
        await this.core.trust(peer);
        await this.refreshContact();
        this.focusComposer();
      } catch (error) {
        showError(this.errors, asCoreError(error).message);
        trust.disabled = false;
      }
    });
    replaceChildren(
      this.warning,
      h(
        "div",
        { role: "alert", class: "alert warning" },
        h("p", {}, h("strong", {}, h("bdi", {}, peer), "'s key has changed."), " They may have reinstalled Carrier, or someone may be trying to intercept your messages. Until you trust the new key, nothing is sent to or shown from this contact. Compare safety numbers first."),
        trust,
      ),
    );
  }

  private async send(): Promise<void> {
    const text = this.input.value;
    if (!text.trim() || this.input.disabled) return;
    this.input.value = "";
    this.autosize();
    showError(this.errors, null);
    try {
      await this.core.send(this.peer, text);
    } catch (error) {
      const e = asCoreError(error);
      // Unreachable: the banner says so already and the message shows "Not sent".
      if (e.code === "empty" || e.code === "unreachable") return;
      showError(this.errors, e.message);
      if (e.code === "key_changed") await this.refreshContact();
    }
  }

  private autosize(): void {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 160)}px`;
  }
}
