/**
 * The signed-in screen: the conversation list beside the open conversation (or the
 * Public view). On a phone-sized window one pane shows at a time.
 */
import type { Account, ClientCore, ConnectionState, ConversationRecord, CoreEvent } from "../core/api";
import { describe } from "../core/errors";
import { ChatView } from "./chat";
import { newConversationDialog } from "./dialogs";
import { h, replaceChildren } from "./dom";
import { initials, isoTime, listTime } from "./format";
import { PublicView } from "./public_view";

type View = { kind: "empty" } | { kind: "chat"; peer: string } | { kind: "public" };

export class Messenger {
  readonly element: HTMLElement;
  private readonly list = h("ul", { class: "conversations", "aria-label": "Conversations" });
  private readonly main = h("div", { class: "pane" });
  private readonly banner = h("div", { class: "banner-slot" });
  private readonly notices = h("div", { class: "notices", role: "status" });
  private readonly warnings = h("div", { class: "warnings" });
  private readonly status = h("p", { class: "presence" }, "Connecting…");
  private readonly chatsTab = h("button", { type: "button", class: "tab", "aria-pressed": "true" }, "Chats");
  private readonly publicTab = h("button", { type: "button", class: "tab", "aria-pressed": "false" }, "Public");
  private readonly chat: ChatView;
  private readonly publicView: PublicView;
  private view: View = { kind: "empty" };
  private unseenBroadcasts = 0;

  constructor(
    private readonly core: ClientCore,
    account: Account,
  ) {
    this.chat = new ChatView(core, () => this.showList());
    this.publicView = new PublicView(core, () => this.showList());
    this.chatsTab.addEventListener("click", () => this.showList());
    this.publicTab.addEventListener("click", () => void this.open({ kind: "public" }));
    const sidebar = h(
      "aside",
      { class: "sidebar" },
      h(
        "header",
        { class: "me" },
        h("div", { class: "avatar", "aria-hidden": "true" }, initials(account.phone)),
        h("div", {}, h("h1", { dir: "auto" }, account.phone), this.status),
      ),
      h("nav", { class: "tabs", "aria-label": "Views" }, this.chatsTab, this.publicTab),
      h("div", { class: "list-head" }, h("button", { type: "button", class: "primary wide", onclick: () => newConversationDialog(core, (peer) => void this.open({ kind: "chat", peer })) }, "New conversation")),
      this.list,
    );
    this.element = h("div", { class: "messenger", "data-pane": "list" }, sidebar, this.main, this.banner, this.warnings, this.notices);
    core.subscribe((event) => void this.handle(event));
    document.addEventListener("visibilitychange", () => void this.readIfVisible());
    window.addEventListener("focus", () => void this.readIfVisible());
    this.renderEmpty();
    void this.refreshList();
  }

  private async handle(event: CoreEvent): Promise<void> {
    switch (event.type) {
      case "conversation":
        if (this.view.kind === "chat" && this.view.peer === event.peer) {
          await this.chat.refreshMessages();
          await this.readIfVisible();
        }
        await this.refreshList();
        break;
      case "contact":
        if (this.view.kind === "chat" && this.view.peer === event.phone) await this.chat.refreshContact();
        await this.refreshList();
        break;
      case "broadcasts":
        if (this.view.kind === "public") await this.publicView.refresh();
        else this.unseenBroadcasts += 1;
        this.renderTabs();
        break;
      case "connection":
        this.showConnection(event.state);
        break;
      case "notice":
        this.notify(event.text);
        break;
      case "warning":
        this.warn(event.text);
        break;
    }
  }

  private async open(view: View): Promise<void> {
    this.view = view;
    this.element.dataset.pane = view.kind === "empty" ? "list" : "main";
    if (view.kind === "chat") {
      replaceChildren(this.main, this.chat.element);
      await this.chat.show(view.peer);
      await this.readIfVisible();
      this.chat.focusComposer();
    } else if (view.kind === "public") {
      this.unseenBroadcasts = 0;
      replaceChildren(this.main, this.publicView.element);
      await this.publicView.refresh();
      this.publicView.focus();
    } else {
      this.renderEmpty();
    }
    this.renderTabs();
    await this.refreshList();
  }

  /** On a phone: back to the list. On a desktop the list is always there; the pane keeps its view. */
  private showList(): void {
    this.element.dataset.pane = "list";
    if (this.view.kind === "public") void this.open({ kind: "empty" });
    this.renderTabs();
    (this.list.querySelector("[aria-current] button, button") as HTMLElement | null)?.focus();
  }

  private async readIfVisible(): Promise<void> {
    if (this.view.kind !== "chat" || document.visibilityState !== "visible") return;
    await this.core.markRead(this.view.peer);
    await this.refreshList();
  }

  private async refreshList(): Promise<void> {
    const rows = await this.core.conversations();
    const current = this.view.kind === "chat" ? this.view.peer : null;
    const flags = await Promise.all(rows.map((r) => this.core.contact(r.peer)));
    replaceChildren(this.list, ...rows.map((row, i) => this.item(row, row.peer === current, flags[i]?.keyChanged ?? false)));
    if (rows.length === 0) this.list.append(h("li", { class: "empty" }, "No conversations yet."));
    const unread = rows.reduce((n, r) => n + r.unread, 0);
    document.title = unread ? `(${unread}) Carrier` : "Carrier";
  }

  private item(row: ConversationRecord, current: boolean, keyChanged: boolean): HTMLLIElement {
    // The peer's number and text each in an isolate, so a bidi override in either stays there.
    const preview = keyChanged ? "Key changed: check before you continue" : row.lastDirection === "out" ? ["You: ", h("bdi", {}, row.lastText)] : row.lastText ? [h("bdi", {}, row.lastText)] : ["No messages yet"];
    return h(
      "li",
      { "aria-current": current ? "true" : undefined },
      h(
        "button",
        { type: "button", class: `conversation${row.unread ? " unread" : ""}`, onclick: () => void this.open({ kind: "chat", peer: row.peer }) },
        h("span", { class: "avatar", "aria-hidden": "true" }, initials(row.peer)),
        h(
          "span",
          { class: "summary" },
          h("span", { class: "line" }, h("span", { class: "name", dir: "auto" }, row.peer), row.lastDirection ? h("time", { datetime: isoTime(row.lastAt) }, listTime(row.lastAt)) : null),
          h("span", { class: "line" }, h("span", { class: `preview${keyChanged ? " alarm" : ""}` }, ...preview), row.unread ? h("span", { class: "badge" }, String(row.unread), h("span", { class: "visually-hidden" }, " unread")) : null),
        ),
      ),
    );
  }

  private renderTabs(): void {
    const publicShown = this.view.kind === "public";
    this.chatsTab.setAttribute("aria-pressed", String(!publicShown));
    this.publicTab.setAttribute("aria-pressed", String(publicShown));
    this.publicTab.replaceChildren("Public", this.unseenBroadcasts ? h("span", { class: "badge" }, String(this.unseenBroadcasts), h("span", { class: "visually-hidden" }, " new")) : "");
  }

  private renderEmpty(): void {
    replaceChildren(
      this.main,
      h("div", { class: "placeholder" }, h("div", { class: "logo big", "aria-hidden": "true" }, "C"), h("p", {}, "Choose a conversation, or start a new one."), h("p", { class: "hint" }, "Messages are end-to-end encrypted. Only you and the people you write to can read them.")),
    );
  }

  private showConnection(state: ConnectionState): void {
    const offline = state.state === "waiting" || state.state === "stopped";
    this.status.textContent = state.state === "open" ? "Online" : offline ? "Offline" : "Connecting…";
    this.status.dataset.state = state.state;
    if (!offline) replaceChildren(this.banner);
    else if (!this.banner.firstChild) this.banner.append(h("div", { role: "alert", class: "alert banner" }, describe("unreachable")));
  }

  /** The latest warning, as an alert that stays until dismissed; a newer one takes its place. */
  private warn(text: string): void {
    const dismiss = h("button", { type: "button", class: "secondary small", onclick: () => replaceChildren(this.warnings) }, "Dismiss");
    replaceChildren(this.warnings, h("div", { role: "alert", class: "alert warning-toast" }, h("p", { dir: "auto" }, text), dismiss));
  }

  private notify(text: string): void {
    const note = h("p", { class: "notice", dir: "auto" }, text);
    this.notices.append(note);
    setTimeout(() => note.remove(), 8000);
  }
}
