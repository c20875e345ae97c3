/** The public broadcasts of the neighbourhood, and a field to post one. */
import type { BroadcastRecord, ClientCore } from "../core/api";
import { asCoreError } from "../core/errors";
import { h, paneHeader, replaceChildren, showError } from "./dom";
import { initials, isoTime, messageTime } from "./format";

function broadcastItem(b: BroadcastRecord): HTMLLIElement {
  return h(
    "li",
    { class: `post${b.own ? " own" : ""}` },
    h("div", { class: "avatar small", "aria-hidden": "true" }, initials(b.from)),
    h(
      "div",
      { class: "post-body" },
      h("p", { class: "meta" }, h("strong", {}, b.own ? "You" : h("bdi", {}, b.from)), " · ", h("time", { datetime: isoTime(b.sentAt) }, messageTime(b.sentAt))),
      h("p", { class: "text", dir: "auto" }, b.text),
    ),
  );
}

export class PublicView {
  readonly element: HTMLElement;
  private readonly list = h("ol", { class: "posts", "aria-labelledby": "public-title" });
  private readonly errors = h("div", { class: "errors" });
  private readonly input = h("textarea", { id: "broadcast", rows: 2, placeholder: "Say something to everyone online" });

  constructor(
    private readonly core: ClientCore,
    back: () => void,
  ) {
    const button = h("button", { type: "submit", class: "primary" }, "Send broadcast");
    const form = h("form", { class: "broadcast-form" }, h("label", { for: "broadcast" }, "Broadcast"), this.input, button);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      showError(this.errors, null);
      button.disabled = true;
      try {
        await this.core.broadcast(this.input.value);
        this.input.value = "";
      } catch (error) {
        showError(this.errors, asCoreError(error).message);
      } finally {
        button.disabled = false;
      }
    });
    this.element = h(
      "section",
      { class: "public", "aria-labelledby": "public-title" },
      paneHeader(
        back,
        h("div", { class: "title" }, h("h2", { id: "public-title" }, "Public"), h("p", { class: "hint" }, "Signed, not encrypted: everyone online in the neighbourhood sees these, as they happen.")),
      ),
      this.list,
      this.errors,
      form,
    );
  }

  async refresh(): Promise<void> {
    const posts = await this.core.broadcasts();
    replaceChildren(this.list, ...posts.map(broadcastItem));
    if (posts.length === 0) this.list.append(h("li", { class: "empty" }, "No broadcasts yet. Broadcasts reach whoever is online when they are sent."));
    this.list.scrollTop = this.list.scrollHeight;
  }

  focus(): void {
    this.input.focus();
  }
}
