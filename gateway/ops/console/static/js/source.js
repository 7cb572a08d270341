// Delivery Overview and Schema of one source: the pipeline from GET /sources/<id>/overview
// (received -> rejected -> filtered -> stored -> per destination) and the events and
// properties from GET /sources/<id>/schema.

import { api, el, fill, formatCount, formatTime, say } from "./common.js";

const main = document.getElementById("main");
const source = main.dataset.source;
const base = `/sources/${encodeURIComponent(source)}`;
const stateLine = document.getElementById("overview-state");
let range = document.querySelector("button.range[aria-pressed=true]")?.dataset.range ?? "24h";

const sum = (counts) => Object.values(counts ?? {}).reduce((a, b) => a + b, 0);
const byReason = (counts) =>
  Object.entries(counts ?? {})
    .sort((a, b) => b[1] - a[1])
    .map(([reason, n]) => `${reason}: ${formatCount(n)}`)
    .join(", ");

function step(label, count, detail, kind = "") {
  return el(
    "div",
    { class: `step ${kind}`, dataset: { step: label } },
    el("span", { class: "label" }, label),
    el("span", { class: "value" }, formatCount(count)),
    detail ? el("span", { class: "reason" }, detail) : null,
  );
}

/** The API's `cut` (where each book starts for this range), in words. */
function cutText(cut) {
  if (typeof cut !== "object" || cut === null) return String(cut);
  return Object.entries(cut)
    .map(([key, value]) => `${key.replaceAll("_", " ")}: ${/_ms$/.test(key) && typeof value === "number" ? formatTime(value / 1000) : JSON.stringify(value)}`)
    .join("; ");
}

async function loadOverview() {
  say(stateLine, "loading…");
  try {
    const o = await api(`${base}/overview?range=${range}`);
    fill(
      document.getElementById("pipeline"),
      step("Received", o.received),
      el("span", { class: "arrow" }, "→"),
      step("Rejected at ingest", sum(o.rejected), byReason(o.rejected), "bad"),
      el("span", { class: "arrow" }, "→"),
      step("Filtered at source", sum(o.filtered), byReason(o.filtered), "warn"),
      el("span", { class: "arrow" }, "→"),
      step("Failed at source", o.dead_lettered ?? 0, "a source filter failed: dead letters of source:" + source, "bad"),
      el("span", { class: "arrow" }, "→"),
      step("Duplicates", o.duplicates ?? 0, "acknowledged, stored once"),
      el("span", { class: "arrow" }, "→"),
      step("Stored", o.stored, "", "ok"),
    );
    fill(document.getElementById("cut"), o.cut ? `How the books are cut: ${cutText(o.cut)}` : "");
    const rows = Object.entries(o.destinations ?? {}).map(([did, d]) =>
      el(
        "tr",
        { dataset: { destination: did } },
        el("td", {}, did),
        el("td", {}, `${formatCount(sum(d.filtered))}${sum(d.filtered) ? ` (${byReason(d.filtered)})` : ""}`),
        el("td", {}, formatCount(d.failed)),
        el("td", {}, formatCount(d.delivered)),
        el("td", {}, formatCount(d.pending)),
      ),
    );
    fill(document.querySelector("#per-destination tbody"), ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 5, class: "hint" }, "No destination."))]));
    say(stateLine, `updated ${formatTime(Date.now() / 1000)}`);
  } catch (error) {
    say(stateLine, error.status === 404 ? "this gateway does not serve the Delivery Overview yet (404)" : `loading failed: ${error.message}`, true);
  }
}

let schema = [];
const search = document.getElementById("schema-search");

function renderSchema() {
  const wanted = search.value.trim().toLowerCase();
  const shown = schema.filter(
    (e) => !wanted || `${e.type} ${e.event}`.toLowerCase().includes(wanted) || (e.properties ?? []).some((p) => p.name.toLowerCase().includes(wanted)),
  );
  const body = document.querySelector("#schema tbody");
  if (shown.length === 0) {
    fill(body, el("tr", {}, el("td", { colspan: 6, class: "hint" }, schema.length ? "Nothing matches." : "No event seen yet.")));
    return;
  }
  fill(
    body,
    ...shown.map((e) => {
      const props = e.properties ?? [];
      const list = el("details", {}, el("summary", {}, `${props.length} properties`));
      list.append(el("ul", { class: "props" }, ...props.map((p) => el("li", {}, el("span", { class: "key" }, p.name), ` ${formatCount(p.count)} · ${formatTime(p.last_seen)}`))));
      return el(
        "tr",
        { dataset: { event: String(e.event ?? "") } },
        el("td", {}, e.type),
        el("td", {}, e.event ?? ""),
        el("td", {}, formatCount(e.count)),
        el("td", {}, formatTime(e.last_seen)),
        el("td", {}, el("span", { class: `badge plan-${e.plan ?? "none"}` }, e.plan ?? "no plan")),
        el("td", {}, props.length ? list : ""),
      );
    }),
  );
}

async function loadSchema() {
  try {
    const answer = await api(`${base}/schema`);
    schema = answer.events ?? [];
    const note = document.getElementById("schema-note");
    if (answer.inventory === false) note.textContent = `Source ${source} keeps no inventory: set inventory = true on it to list what it sends.`;
    else if (answer.counted_since) note.textContent = `Counted since ${formatTime(answer.counted_since > 1e11 ? answer.counted_since / 1000 : answer.counted_since)}.`;
    renderSchema();
  } catch (error) {
    fill(
      document.querySelector("#schema tbody"),
      el("tr", {}, el("td", { colspan: 6, class: "error" }, error.status === 404 ? "this gateway does not serve the schema yet (404)" : `loading failed: ${error.message}`)),
    );
  }
}

for (const button of document.querySelectorAll("button.range")) {
  button.addEventListener("click", () => {
    range = button.dataset.range;
    for (const other of document.querySelectorAll("button.range")) other.setAttribute("aria-pressed", String(other === button));
    loadOverview();
  });
}
search.addEventListener("input", renderSchema);
loadOverview();
loadSchema();
