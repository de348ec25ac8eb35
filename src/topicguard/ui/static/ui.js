// topicguard's page: a little JavaScript over server-rendered HTML. Every text from a message
// or a file goes into the page as text (textContent), never as HTML.
"use strict";

const HISTORY_KEY = "topicguard-history";
const HISTORY_SIZE = 20;
const SHOWN_CHARS = 160; // of a long text in the history

function $(id) { return document.getElementById(id); }

async function api(method, url, body, raw) {
  const headers = { "x-topicguard-ui": "1" };
  if (body !== undefined && !raw) headers["content-type"] = "application/json";
  const response = await fetch(url, {
    method, headers, body: body === undefined ? undefined : (raw ? body : JSON.stringify(body)),
  });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    throw new Error((data && data.error) || ("the server answered " + response.status));
  }
  return data;
}

function showProblem(element, error) {
  element.textContent = error ? String(error.message || error) : "";
  element.hidden = !error;
}

function pct(value) { return (Math.max(0, Math.min(1, value)) * 100).toFixed(1) + "%"; }

// the score on a bar, the threshold marked
function drawBar(bar, fill, mark, verdict) {
  fill.style.width = pct(verdict.score);
  fill.className = "fill " + (verdict.allowed ? "allowed" : "blocked");
  mark.style.left = pct(verdict.threshold);
  bar.setAttribute("aria-label", "score " + verdict.score.toFixed(3) +
    " against the threshold " + verdict.threshold.toFixed(3));
  bar.dataset.score = String(verdict.score);
  bar.dataset.threshold = String(verdict.threshold);
}

function showVerdict(element, allowed) {
  element.textContent = allowed ? "allowed" : "blocked";
  element.className = "verdict " + (allowed ? "allowed" : "blocked");
}

function language(verdict) {
  if (!verdict.lang) return "not detected (the guard knows no languages)";
  if (verdict.lang === "und") return "none (no letters)";
  return verdict.lang + (verdict.lang_supported ? "" : " (not one of the guard's languages)");
}

// ---- Try it ----
function initTry() {
  const form = $("try-form"), text = $("try-text");
  const modes = form.querySelectorAll("input[name=mode]");
  for (const radio of modes) {
    radio.addEventListener("change", () => {
      const conversation = form.mode.value === "conversation";
      $("try-label").textContent = conversation ? "User turns, one a line" : "Message";
      $("try-hint").textContent = conversation
        ? "The last line is judged, in the context of the turns before it. Ctrl+Enter: judge."
        : "The guard judges it as a customer's message. Enter: judge; Shift+Enter: new line.";
      text.rows = conversation ? 6 : 4;
    });
  }
  text.addEventListener("keydown", (event) => {
    const conversation = form.mode.value === "conversation";
    const submit = conversation ? (event.key === "Enter" && event.ctrlKey)
      : (event.key === "Enter" && !event.shiftKey);
    if (submit) { event.preventDefault(); form.requestSubmit(); }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const conversation = form.mode.value === "conversation";
    const turns = text.value.split("\n").filter((t) => t.trim());
    const body = conversation ? { turns } : { text: text.value };
    $("try-submit").disabled = true;
    try {
      const result = await api("POST", "/ui/api/try", body);
      showProblem($("try-error"), null);
      showResult(result);
      remember(conversation ? turns.join(" / ") : text.value, result);
    } catch (error) {
      showProblem($("try-error"), error);
    } finally {
      $("try-submit").disabled = false;
    }
  });
  drawHistory();
}

function showResult(result) {
  $("try-result").hidden = false;
  showVerdict($("verdict"), result.allowed);
  drawBar($("score-bar"), $("score-fill"), $("score-threshold"), result);
  $("score").textContent = result.score.toFixed(4);
  $("threshold").textContent = result.threshold.toFixed(4);
  $("lang").textContent = language(result);
  let model = result.model === "multilingual" ? "the multilingual model" : "the fast model";
  model += " (" + result.model_name + ")";
  if (result.second_opinion) model += ", with the multilingual model's second opinion";
  $("judged-by").textContent = model;
  $("context").textContent = result.context
    ? "allowed as a follow-up to the turn before it" : "judged on its own";
  const window = result.window;
  $("window").hidden = !window;
  if (window) {
    $("window-where").textContent = "Characters " + window.start + " to " + window.end + " of " +
      result.chars + ", the least on-topic of " + window.count + " windows:";
    $("window-text").textContent = window.text;
  }
}

function loadHistory() {
  try { return JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "[]"); } catch (e) { return []; }
}

function remember(text, result) {
  const items = loadHistory();
  items.unshift({ text, allowed: result.allowed, score: result.score });
  sessionStorage.setItem(HISTORY_KEY, JSON.stringify(items.slice(0, HISTORY_SIZE)));
  drawHistory();
}

function drawHistory() {
  const list = $("history"), items = loadHistory();
  list.replaceChildren();
  $("history-empty").hidden = items.length > 0;
  for (const item of items) {
    const entry = document.createElement("li");
    const verdict = document.createElement("span");
    showVerdict(verdict, item.allowed);
    const again = document.createElement("button");
    again.type = "button";
    again.textContent = item.text.length > SHOWN_CHARS ? item.text.slice(0, SHOWN_CHARS) + "…" : item.text;
    again.title = "Put this text back in the box";
    again.addEventListener("click", () => { $("try-text").value = item.text; $("try-text").focus(); });
    entry.append(verdict, " " + item.score.toFixed(3) + " ", again);
    list.append(entry);
  }
}

// ---- Review ----
function initReview() {
  const upload = $("upload-form");
  if (upload) {
    upload.addEventListener("submit", async (event) => {
      event.preventDefault();
      const file = $("upload-file").files[0];
      if (!file) return;
      try {
        const state = await api("POST", "/ui/api/reviews?name=" + encodeURIComponent(file.name), file, true);
        window.location.assign("/review/" + encodeURIComponent(state.name));
      } catch (error) {
        showProblem($("upload-error"), error);
      }
    });
  }
  const review = $("review");
  if (!review) return;
  const base = "/ui/api/reviews/" + encodeURIComponent(review.dataset.name);
  let state = null, busy = false;

  async function act(method, url, body) {
    if (busy) return;
    busy = true;
    try {
      state = await api(method, url, body);
      showProblem($("review-error"), null);
      drawReview(state);
    } catch (error) {
      showProblem($("review-error"), error);
    } finally {
      busy = false;
    }
  }
  function decide(decision) {
    if (state && state.row) act("POST", base + "/decisions", { row: state.row.index, decision });
  }
  function undo() { if (state && state.can_undo) act("POST", base + "/undo", {}); }

  for (const button of review.querySelectorAll("button[data-decision]")) {
    button.addEventListener("click", () => decide(button.dataset.decision));
  }
  $("undo").addEventListener("click", undo);
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, textarea, select")) return;
    const key = event.key.toLowerCase();
    const decisions = { a: "allow", b: "block", s: "skip" };
    if (decisions[key]) { event.preventDefault(); decide(decisions[key]); }
    else if (key === "u") { event.preventDefault(); undo(); }
  });
  act("GET", base);
}

function drawReview(state) {
  const done = state.counts.allow + state.counts.block + state.counts.skip;
  $("review-progress").textContent = done + " of " + state.rows + " rows reviewed: " +
    state.counts.allow + " allowed, " + state.counts.block + " blocked, " +
    state.counts.skip + " skipped.";
  $("review-saved").textContent = state.saved
    ? "Reviewed rows are saved in " + state.saved + " (for topicguard train --data)." : "";
  $("undo").disabled = !state.can_undo;
  const row = state.row;
  $("review-row").hidden = !row;
  $("review-done").hidden = !!row;
  if (row) {
    $("row-title").textContent = "Row " + (row.index + 1) + " of " + state.rows + " (line " + row.line + ")";
    $("row-text").textContent = row.text;
    const fields = $("row-fields");
    fields.replaceChildren();
    for (const [key, value] of Object.entries(row.fields)) {
      const term = document.createElement("dt"), detail = document.createElement("dd");
      term.textContent = key;
      detail.textContent = value;
      fields.append(term, detail);
    }
    showVerdict($("row-verdict"), row.guard.allowed);
    $("row-verdict").textContent += " (score " + row.guard.score.toFixed(3) + ")";
    drawBar($("row-bar"), $("row-fill"), $("row-threshold"), row.guard);
  }
  const malformed = $("review-malformed");
  malformed.hidden = state.n_malformed === 0;
  if (state.n_malformed) {
    $("malformed-summary").textContent = state.n_malformed +
      (state.n_malformed === 1 ? " line" : " lines") + " left out (not a JSON object with a text)";
    const list = $("malformed-list");
    list.replaceChildren();
    for (const item of state.malformed) {
      const entry = document.createElement("li");
      entry.textContent = "line " + item.line + ": " + item.problem;
      list.append(entry);
    }
    if (state.n_malformed > state.malformed.length) {
      const more = document.createElement("li");
      more.textContent = "and " + (state.n_malformed - state.malformed.length) + " more";
      list.append(more);
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "try") initTry();
  if (page === "review") initReview();
});
