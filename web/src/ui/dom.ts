/** A few lines instead of a framework: build elements, and swap a container's children. */

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(name.replace(/^on/, ""), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  el.append(...children.filter((c): c is Node | string => c !== null && c !== undefined && c !== false));
  return el;
}

export function replaceChildren(parent: Element, ...children: Child[]): void {
  parent.replaceChildren(...children.filter((c): c is Node | string => c !== null && c !== undefined && c !== false));
}

/** An error sentence for screen readers and eyes; created only when there is something to say. */
export function alertBox(text: string, ...extra: Child[]): HTMLElement {
  return h("div", { role: "alert", class: "alert" }, h("p", {}, text), ...extra);
}

/** Shows (or clears, with null) a form's error in its slot. */
export function showError(slot: Element, text: string | null): void {
  replaceChildren(slot, text ? alertBox(text) : null);
}

/** The header of the right-hand pane; its back button shows only on phone-sized windows. */
export function paneHeader(back: () => void, ...children: Child[]): HTMLElement {
  return h(
    "header",
    { class: "chat-head" },
    h("button", { type: "button", class: "back", "aria-label": "Back to conversations", onclick: back }, "‹"),
    ...children,
  );
}
