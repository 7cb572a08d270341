// Event Delivery for one destination: totals and a trend chart over a range
// (GET /destinations/<id>/delivery), errors by kind with a sample of the exchange, the dead
// letters (GET /dead-letters; POST redrive/discard) and replays (POST /replays, progress from
// GET /status).

import { api, el, fill, formatCount, formatTime, jsonTree, redacted, say, tabGroup } from "./common.js";

const main = document.getElementById("main");
const destination = main.dataset.destination;
const stateLine = document.getElementById("delivery-state");
let range = document.querySelector("button.range[aria-pressed=true]")?.dataset.range ?? "1h";
let chart = null;

// -- totals, chart, errors --------------------------------------------------------------------

function tile(label, value, title) {
  return el("div", { class: "tile", title }, el("span", { class: "label" }, label), el("span", { class: "value" }, value));
}

function renderTotals(totals) {
  const filtered = totals.filtered ?? {};
  const filteredSum = Object.values(filtered).reduce((a, b) => a + b, 0);
  const reasons = Object.entries(filtered).map(([reason, n]) => `${reason}: ${n}`).join(", ");
  fill(
    document.getElementById("totals"),
    tile("Delivered", formatCount(totals.delivered)),
    tile("Dead-lettered", formatCount(totals.dead_lettered)),
    tile("Filtered", formatCount(filteredSum), reasons || "none"),
    tile("Retries", formatCount(totals.retries)),
    tile("P95 latency", totals.p95_latency_ms == null ? "–" : `${formatCount(Math.round(totals.p95_latency_ms))} ms`),
  );
  if (reasons) document.getElementById("totals").append(el("p", { class: "hint" }, `Filtered by reason: ${reasons}`));
}

function renderChart(series) {
  const box = document.getElementById("chart");
  chart?.destroy();
  chart = null;
  fill(box);
  if (!window.uPlot || series.length === 0) {
    box.append(el("p", { class: "hint" }, series.length === 0 ? "No traffic in this range." : "Chart library missing."));
    return;
  }
  const column = (name) => series.map((point) => point[name] ?? null);
  const data = [series.map((p) => p.t / 1000), column("delivered"), column("dead_lettered"), column("filtered"), column("retries"), column("p95_latency_ms")];
  const options = {
    width: Math.max(320, box.clientWidth || 800),
    height: 240,
    series: [
      {},
      { label: "delivered", stroke: "#1a7f37", width: 2 },
      { label: "dead-lettered", stroke: "#cf222e", width: 2 },
      { label: "filtered", stroke: "#9a6700", width: 1 },
      { label: "retries", stroke: "#8250df", width: 1 },
      { label: "p95 ms", stroke: "#0969da", width: 1, dash: [4, 4], scale: "ms" },
    ],
    axes: [{}, { label: "messages" }, { side: 1, scale: "ms", label: "ms", grid: { show: false } }],
  };
  chart = new window.uPlot(options, data, box);
}

function sampleText(part) {
  if (part === undefined || part === null) return "(none: no answer came)";
  if (typeof part === "string") {
    try {
      return JSON.stringify(redacted(JSON.parse(part)), null, 2);
    } catch {
      return part;
    }
  }
  return JSON.stringify(redacted(part), null, 2);
}

let sample = null;
const sampleTabs = [...document.querySelectorAll("#sample [role=tab]")];
tabGroup(sampleTabs, (button) => showSamplePart(button.dataset.part));

function showSamplePart(part) {
  const body = document.getElementById("sample-body");
  body.textContent = sample ? sampleText(sample[part]) : "";
  body.dataset.part = part;
}

function openSample(error) {
  sample = error.exchange ?? {};
  document.getElementById("sample-title").textContent = `${error.kind}: ${error.last_error}`;
  document.getElementById("sample").hidden = false;
  for (const tab of sampleTabs) tab.setAttribute("aria-selected", String(tab.dataset.part === "sent"));
  showSamplePart("sent");
}

function renderErrors(errors) {
  const body = document.querySelector("#errors tbody");
  if (errors.length === 0) {
    fill(body, el("tr", {}, el("td", { colspan: 6, class: "hint" }, "No errors in this range.")));
    return;
  }
  fill(
    body,
    ...errors.map((error) => {
      const button = el("button", { type: "button", class: "sample-button" }, "Sample");
      button.addEventListener("click", () => openSample(error));
      return el(
        "tr",
        { dataset: { kind: String(error.kind) } },
        el("td", {}, error.kind),
        el("td", {}, formatCount(error.count)),
        el("td", { class: "reason" }, error.last_error),
        el("td", {}, formatTime(error.last_at)),
        el("td", {}, error.retryable ? "yes, with backoff" : "no: dead-lettered"),
        el("td", {}, error.exchange ? button : "no sample"),
      );
    }),
  );
}

async function loadDelivery() {
  say(stateLine, "loading…");
  try {
    const answer = await api(`/destinations/${encodeURIComponent(destination)}/delivery?range=${range}`);
    renderTotals(answer.totals ?? {});
    renderChart(answer.series ?? []);
    renderErrors(answer.errors ?? []);
    say(stateLine, `updated ${formatTime(Date.now() / 1000)}`);
  } catch (error) {
    if (error.status !== 404 || error.code === "no_such_destination") {
      say(stateLine, `loading failed: ${error.message}`, true);
      return;
    }
    // A gateway without time series yet: the counters and error samples of GET /status.
    const status = (await api("/status")).destinations?.[destination] ?? {};
    renderTotals({ delivered: status.delivered, dead_lettered: status.dead_lettered, filtered: {}, retries: status.retries });
    renderChart([]);
    renderErrors(status.errors ?? []);
    say(stateLine, "no time series on this gateway: counters since start, from GET /status");
  }
}

for (const button of document.querySelectorAll("button.range")) {
  button.addEventListener("click", () => {
    range = button.dataset.range;
    for (const other of document.querySelectorAll("button.range")) other.setAttribute("aria-pressed", String(other === button));
    loadDelivery();
  });
}
document.getElementById("refresh").addEventListener("click", () => {
  loadDelivery();
  loadLetters();
});

// -- dead letters -----------------------------------------------------------------------------

const lettersState = document.getElementById("letters-state");
const letterBody = document.getElementById("letter-body");
const redriveButton = document.getElementById("redrive");
const discardButton = document.getElementById("discard");
const selectAll = document.getElementById("select-all");

function selectedIds() {
  return [...document.querySelectorAll("#letters tbody input[type=checkbox]:checked")].map((box) => Number(box.value));
}

function updateButtons() {
  const none = selectedIds().length === 0;
  redriveButton.disabled = none;
  discardButton.disabled = none;
}

function inspect(letter) {
  letterBody.hidden = false;
  letterBody.textContent = sampleText(letter.message);
}

async function loadLetters() {
  try {
    const letters = await api(`/dead-letters?destination=${encodeURIComponent(destination)}&limit=100`);
    const body = document.querySelector("#letters tbody");
    selectAll.checked = false;
    if (letters.length === 0) {
      fill(body, el("tr", {}, el("td", { colspan: 7, class: "hint" }, "No dead letters.")));
    } else {
      fill(
        body,
        ...letters.map((letter) => {
          const box = el("input", { type: "checkbox", value: letter.id, "aria-label": `select ${letter.id}` });
          box.addEventListener("change", updateButtons);
          const tr = el(
            "tr",
            { class: "letter", dataset: { id: String(letter.id) } },
            el("td", {}, box),
            el("td", {}, letter.id),
            el("td", {}, letter.source),
            el("td", { class: "reason" }, letter.error),
            el("td", {}, letter.attempts),
            el("td", {}, formatTime(letter.failed_at)),
            el("td", {}, letter.state),
          );
          tr.addEventListener("click", (event) => {
            if (event.target !== box) inspect(letter);
          });
          return tr;
        }),
      );
    }
    updateButtons();
  } catch (error) {
    say(lettersState, `loading dead letters failed: ${error.message}`, true);
  }
}

selectAll.addEventListener("change", () => {
  for (const box of document.querySelectorAll("#letters tbody input[type=checkbox]")) box.checked = selectAll.checked;
  updateButtons();
});

async function change(action) {
  const ids = selectedIds();
  try {
    const answer = await api(`/dead-letters/${action}`, { method: "POST", body: { ids } });
    say(lettersState, `${answer.changed} dead letter(s) ${action === "redrive" ? "marked for redrive" : "discarded"}`);
  } catch (error) {
    say(lettersState, `${action} failed: ${error.message}`, true);
  }
  await loadLetters();
}
redriveButton.addEventListener("click", () => change("redrive"));
discardButton.addEventListener("click", () => change("discard"));

// -- replays ----------------------------------------------------------------------------------

const replayState = document.getElementById("replay-state");
/** Replays seen on this page: name -> last state; one gone from /status has finished. */
const replaysSeen = new Map();
let replayTimer = null;

document.getElementById("replay").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const sinceMs = new Date(String(form.get("since"))).getTime();
  const until = String(form.get("until") ?? "");
  const untilMs = until ? new Date(until).getTime() : null;
  if (Number.isNaN(sinceMs) || (untilMs !== null && Number.isNaN(untilMs))) {
    say(replayState, "give since (and until, or leave it empty for now) as dates and times", true);
    return;
  }
  try {
    const answer = await api("/replays", { method: "POST", body: { destination, since_ms: sinceMs, until_ms: untilMs } });
    if (answer.replay === null) say(replayState, "nothing to replay: the log holds no message in that range");
    else {
      const r = answer.replay;
      replaysSeen.set(r.name, { start_seq: r.start_seq, end_seq: r.end_seq, cursor: r.start_seq, delivered: 0, finished: false });
      say(replayState, `replay ${r.name} started: seqs ${r.start_seq + 1} to ${r.end_seq}`);
    }
  } catch (error) {
    say(replayState, `replay refused: ${error.message}`, true);
  }
  watchReplays();
});

document.getElementById("replay-cancel").addEventListener("click", async () => {
  try {
    const answer = await api("/replays/cancel", { method: "POST", body: { destination } });
    say(replayState, `cancelled: ${JSON.stringify(answer.cancelled)}`);
  } catch (error) {
    say(replayState, `cancel failed: ${error.message}`, true);
  }
  watchReplays();
});

async function loadReplays() {
  const running = (await api("/status")).destinations?.[destination]?.replays ?? {};
  for (const [name, state] of Object.entries(running)) replaysSeen.set(name, { ...state, finished: false });
  for (const [name, state] of replaysSeen) {
    if (!(name in running) && !state.finished) replaysSeen.set(name, { ...state, cursor: state.end_seq, finished: true });
  }
  const body = document.querySelector("#replays tbody");
  if (replaysSeen.size === 0) {
    fill(body, el("tr", {}, el("td", { colspan: 6, class: "hint" }, "No replay running.")));
    return false;
  }
  fill(
    body,
    ...[...replaysSeen].map(([name, r]) => {
      const total = Math.max(1, r.end_seq - r.start_seq);
      const done = Math.min(total, Math.max(0, r.cursor - r.start_seq));
      const progress = el("progress", { max: total, value: done });
      return el(
        "tr",
        { class: `replay-row${r.finished ? " finished" : ""}`, dataset: { replay: name } },
        el("td", {}, name),
        el("td", {}, r.start_seq),
        el("td", {}, r.end_seq),
        el("td", {}, r.cursor),
        el("td", {}, formatCount(r.delivered)),
        el("td", {}, progress, r.finished ? " done" : ` ${Math.round((100 * done) / total)}%`),
      );
    }),
  );
  return Object.keys(running).length > 0;
}

function watchReplays() {
  clearTimeout(replayTimer);
  const tick = async () => {
    let running = false;
    try {
      running = await loadReplays();
    } catch (error) {
      say(replayState, `replay progress unavailable: ${error.message}`, true);
    }
    if (running) replayTimer = setTimeout(tick, 1000);
    else loadDelivery();
  };
  tick();
}

loadDelivery();
loadLetters();
watchReplays();
setInterval(() => {
  if (!document.hidden) loadDelivery();
}, 15000);
