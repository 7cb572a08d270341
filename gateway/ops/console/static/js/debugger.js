// Source Debugger: the last 500 calls of one source from GET /sources/<id>/events, then live
// from the SSE stream GET /sources/<id>/stream, newest first. Pause closes the stream; resume
// fetches what came meanwhile and reconnects. A `gap` event (the server dropped rows because
// this browser fell behind) becomes a marker row saying how many.

import { api, el, fill, formatTime, jsonTree, redacted, say, tabGroup } from "./common.js";

const KEEP = 500;
const main = document.getElementById("main");
const source = main.dataset.source;
const base = `/sources/${encodeURIComponent(source)}`;

const rows = document.getElementById("calls");
const stateLine = document.getElementById("stream-state");
const countLine = document.getElementById("count");
const pauseButton = document.getElementById("pause");
const filters = {
  text: document.getElementById("search"),
  type: document.getElementById("filter-type"),
  event: document.getElementById("filter-event"),
  user: document.getElementById("filter-user"),
  anonymous: document.getElementById("filter-anonymous"),
  outcome: document.getElementById("filter-outcome"),
};

/** Newest first: tap entries, and gap markers `{gap: n, at}`. */
let items = [];
const seen = new Set();
let stream = null;
let paused = false;
let selected = null;
let renderPending = false;
let gapSeq = 0;

/** The call's type: the tap's, else the message's own (a refused call may have none). */
function typeOf(entry) {
  const m = entry.message && typeof entry.message === "object" ? entry.message : {};
  return String(entry.type ?? m.type ?? "");
}

function nameOf(entry) {
  if (entry.event) return String(entry.event);
  const m = entry.message && typeof entry.message === "object" ? entry.message : {};
  switch (typeOf(entry)) {
    case "track":
      return m.event ?? "";
    case "page":
    case "screen":
      return m.name ?? m.properties?.title ?? "";
    case "identify":
      return m.traits?.email ? `${entry.userId ?? m.userId ?? ""} (${m.traits.email})` : entry.userId ?? m.userId ?? "";
    case "group":
      return m.groupId ?? "";
    case "alias":
      return `${m.previousId ?? ""} → ${m.userId ?? ""}`;
    default:
      return "";
  }
}

function identityOf(entry) {
  const parts = [];
  if (entry.userId) parts.push(`user ${entry.userId}`);
  if (entry.anonymousId) parts.push(`anon ${entry.anonymousId}`);
  return parts.join(" · ");
}

/** Ids rise per process, so a restarted gateway reuses them: its calls are told apart by time too. */
const keyOf = (entry) => `${entry.id}|${entry.at}`;

function add(entries) {
  const fresh = entries.filter((e) => e && e.id !== undefined && !seen.has(keyOf(e)));
  if (fresh.length === 0) return;
  for (const entry of fresh) seen.add(keyOf(entry));
  items = [...fresh, ...items].sort((a, b) => (b.at ?? 0) - (a.at ?? 0) || (b.id ?? 0) - (a.id ?? 0));
  trim();
  scheduleRender();
}

function addGap(dropped) {
  items.unshift({ gap: dropped, at: Date.now() / 1000, key: `gap-${++gapSeq}` });
  trim();
  scheduleRender();
}

function trim() {
  while (items.length > KEEP) {
    const gone = items.pop();
    if (gone.id !== undefined) seen.delete(keyOf(gone));
  }
}

function matches(entry) {
  if (entry.gap !== undefined) return true;
  const text = filters.text.value.trim().toLowerCase();
  if (text && !JSON.stringify(redacted(entry)).toLowerCase().includes(text)) return false;
  if (filters.type.value && typeOf(entry) !== filters.type.value) return false;
  if (filters.outcome.value && entry.outcome !== filters.outcome.value) return false;
  const contains = (value, wanted) => !wanted || String(value ?? "").toLowerCase().includes(wanted.trim().toLowerCase());
  return (
    contains(nameOf(entry), filters.event.value) &&
    contains(entry.userId, filters.user.value) &&
    contains(entry.anonymousId, filters.anonymous.value)
  );
}

function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    render();
  });
}

function render() {
  const shown = items.filter(matches);
  const calls = items.filter((i) => i.gap === undefined).length;
  countLine.textContent = `${shown.filter((i) => i.gap === undefined).length} of ${calls} calls shown`;
  fill(rows, ...shown.map(row));
}

function row(entry) {
  if (entry.gap !== undefined) {
    return el(
      "tr",
      { class: "gap" },
      el("td", { colspan: 5 }, `${entry.gap} calls not shown here: this browser fell behind the stream (${formatTime(entry.at)})`),
    );
  }
  const outcome = el("td", {}, el("span", { class: `badge ${entry.outcome}` }, entry.outcome));
  if (entry.outcome !== "accepted" && (entry.code || entry.reason)) {
    outcome.append(" ", el("span", { class: "reason" }, [entry.code, entry.reason].filter(Boolean).join(": ")));
  }
  const tr = el(
    "tr",
    { class: `call ${entry.outcome}${selected === keyOf(entry) ? " selected" : ""}`, tabindex: 0, dataset: { id: String(entry.id) } },
    outcome,
    el("td", { class: "type" }, typeOf(entry).toUpperCase()),
    el("td", { class: "name" }, nameOf(entry)),
    el("td", { class: "identity" }, identityOf(entry)),
    el("td", { class: "time" }, formatTime(entry.at)),
  );
  const open = () => show(entry);
  tr.addEventListener("click", open);
  tr.addEventListener("keydown", (event) => {
    if (event.key === "Enter") open();
  });
  return tr;
}

// -- the detail pane -------------------------------------------------------------------------

const detail = document.getElementById("detail");
const pretty = document.getElementById("pretty");
const raw = document.getElementById("raw");
const tabs = [document.getElementById("tab-pretty"), document.getElementById("tab-raw")];
tabGroup(tabs, (button) => {
  pretty.hidden = button.id !== "tab-pretty";
  raw.hidden = button.id !== "tab-raw";
});

function show(entry) {
  selected = keyOf(entry);
  detail.hidden = false;
  document.getElementById("detail-title").textContent = `${typeOf(entry).toUpperCase()} ${nameOf(entry)}`;
  const outcome = [entry.outcome, entry.code, entry.reason].filter(Boolean).join(" · ");
  document.getElementById("detail-outcome").textContent = `${outcome} · ${formatTime(entry.at)} · messageId ${entry.messageId ?? "none"}`;
  const message = typeof entry.message === "string" ? entry.message : redacted(entry.message);
  fill(
    pretty,
    ...(typeof message === "string" || message === null || typeof message !== "object"
      ? [el("pre", { class: "raw" }, String(message))]
      : [el("pre", { class: "library-call" }, libraryCall(typeOf(entry), message)), jsonTree(message)]),
  );
  raw.textContent = typeof message === "string" ? message : JSON.stringify(message, null, 2);
  scheduleRender();
}

/** The call as analytics.js would have made it, for Pretty (Segment's Debugger shows the same). */
function libraryCall(type, m) {
  const args = {
    track: [m.event, m.properties],
    identify: [m.userId ?? m.anonymousId, m.traits],
    page: [m.category, m.name, m.properties],
    screen: [m.name, m.properties],
    group: [m.groupId, m.traits],
    alias: [m.userId, m.previousId],
  }[type];
  if (!args) return JSON.stringify(m, null, 2);
  const shown = args.filter((a, i) => a !== undefined && a !== null && !(i === 0 && a === ""));
  return `analytics.${type}(${shown.map((a) => JSON.stringify(a, null, 2)).join(", ")})`;
}

// -- loading and streaming -------------------------------------------------------------------

async function backfill() {
  try {
    const answer = await api(`${base}/events?limit=${KEEP}`);
    add(answer.events ?? []);
    if (answer.dropped) countLine.title = `${answer.dropped} calls were dropped by the tap since the gateway started`;
    return true;
  } catch (error) {
    say(stateLine, error.status === 404 ? "this gateway has no debugger tap (GET /events: 404)" : `loading failed: ${error.message}`, true);
    return false;
  }
}

function connect() {
  const es = new EventSource(`${base}/stream`, { withCredentials: true });
  stream = es;
  let broken = false;
  es.addEventListener("open", () => {
    say(stateLine, "live");
    if (broken) backfill(); // whatever came while the connection was down
    broken = false;
  });
  es.addEventListener("call", (event) => add([JSON.parse(event.data)]));
  es.addEventListener("gap", (event) => addGap(JSON.parse(event.data).dropped ?? 0));
  es.addEventListener("error", async () => {
    broken = true;
    if (paused || stream !== es) return;
    say(stateLine, "reconnecting…", true);
    if (es.readyState === EventSource.CLOSED) {
      // The browser gave up (an answer that is not a stream: the session ended, say): ask the
      // API, which sends this page to the login form on a 401, else try again in a moment.
      disconnect();
      if (await backfill()) setTimeout(() => paused || stream || connect(), 2000);
    }
  });
}

function disconnect() {
  stream?.close();
  stream = null;
}

pauseButton.addEventListener("click", async () => {
  paused = !paused;
  pauseButton.textContent = paused ? "Resume" : "Pause";
  pauseButton.setAttribute("aria-pressed", String(paused));
  if (paused) {
    disconnect();
    say(stateLine, "paused");
  } else {
    say(stateLine, "connecting…");
    await backfill();
    connect();
  }
});

for (const input of Object.values(filters)) input.addEventListener("input", scheduleRender);

(async () => {
  if (await backfill()) connect();
  render();
})();
