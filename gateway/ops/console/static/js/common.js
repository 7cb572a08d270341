// What every console view shares: calling the admin API with the session cookie (and the CSRF
// token on changes), and building DOM from data. Data only ever reaches the page through
// textContent: never innerHTML, never an href or src, so a value holding markup or a
// `javascript:` URL is shown as text.

const CSRF = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

/** An error the admin API answered with (its JSON `code` and `message`). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** GET (or POST with `body`, sent as JSON with the CSRF token) `path`; the decoded JSON. */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") {
    init.headers["X-CSRF-Token"] = CSRF;
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body ?? {});
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    window.location.assign(`/console/login?next=${encodeURIComponent(window.location.pathname)}`);
    throw new ApiError(401, "unauthorized", "the session ended: log in again");
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const code = payload?.code ?? String(response.status);
    throw new ApiError(response.status, code, payload?.message ?? response.statusText);
  }
  return payload;
}

/** `el("td", {class: "x", title: "..."}, "text", child)`: an element whose text is set, never parsed. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "hidden") node.hidden = true;
    else if (/^on|^href$|^src$|^style$/i.test(name)) throw new Error(`el(): ${name} is not set from data`);
    else node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace `node`'s children. */
export function fill(node, ...children) {
  node.replaceChildren(...children.filter((c) => c !== undefined && c !== null));
}

/** `YYYY-MM-DD HH:MM:SS` in the browser's time zone, from epoch seconds. */
export function formatTime(epochSecs) {
  if (epochSecs === undefined || epochSecs === null || Number.isNaN(Number(epochSecs))) return "";
  const d = new Date(Number(epochSecs) * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A count with thousands separators. */
export function formatCount(n) {
  return Number(n ?? 0).toLocaleString("en-US");
}

const SECRET_KEY = /^(write_?key|password|secret|token|authorization)$/i;

/** A copy of `value` with secrets (a write key, a password...) shown as `***`: the console
 * never shows them, whatever a client put in a call. */
export function redacted(value) {
  if (Array.isArray(value)) return value.map(redacted);
  if (value && typeof value === "object") {
    const out = {};
    for (const [key, item] of Object.entries(value)) out[key] = SECRET_KEY.test(key) ? "***" : redacted(item);
    return out;
  }
  return value;
}

/** A readable tree of a JSON value: nested lists of `key: value`, objects open to two levels. */
export function jsonTree(value, depth = 0) {
  if (value === null || typeof value !== "object") {
    return el("span", { class: `json-${value === null ? "null" : typeof value}` }, JSON.stringify(value));
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  if (entries.length === 0) return el("span", { class: "json-empty" }, Array.isArray(value) ? "[]" : "{}");
  const list = el("ul", { class: "tree" });
  for (const [key, item] of entries) {
    const nested = item !== null && typeof item === "object" && Object.keys(item).length > 0;
    if (nested) {
      const details = el("details", depth < 2 ? { open: "" } : {}, el("summary", {}, el("span", { class: "key" }, String(key))));
      details.append(jsonTree(item, depth + 1));
      list.append(el("li", {}, details));
    } else {
      list.append(el("li", {}, el("span", { class: "key" }, String(key)), ": ", jsonTree(item, depth + 1)));
    }
  }
  return list;
}

/** Show one of a tab group's panels: `tabs` are buttons, `show(name)` is called with the chosen one. */
export function tabGroup(buttons, show) {
  for (const button of buttons) {
    button.addEventListener("click", () => {
      for (const other of buttons) other.setAttribute("aria-selected", String(other === button));
      show(button);
    });
  }
}

/** A status line: text, marked as an error or not. */
export function say(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}
