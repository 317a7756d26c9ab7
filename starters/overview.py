"""The fleet overview page: one read-only page, and its JSON, for the whole fleet.

    GET /overview        the page (static HTML and script, no data: it carries nothing
                         to protect and loads the JSON with the caller's credentials)
    GET /v1/overview     the data (starters/fleet_view.py `FleetOverview`); `?selector=`
                         narrows it with a label selector (400 for a malformed one)

The page filters by selector (kept in the address, so a filtered view can be shared),
refreshes every 15 s, and links each running operation to the Temporal UI. Data is
inserted as text, never as HTML. A token for the API can be handed to the page in the
address fragment (`/overview#token=...`, never sent to a server in the address): it is
kept in the tab's sessionStorage and sent as `Authorization: Bearer`.

Mounted on the API by starters/api.py; `visible` narrows every answer to the caller's
teams.
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from starters.fleet_view import FleetOverview, Scope, fleet_overview


class BadSelector(ValueError):
    """A selector the inventory refuses (its message says why)."""


async def overview_data(client: Client, selector: str, visible: Scope | None) -> FleetOverview:
    try:
        return await fleet_overview(client, selector=selector, visible=visible)
    except ApplicationError as exc:
        if exc.type == "BadSelector":
            raise BadSelector(exc.message) from None
        raise


# The page loads nothing from elsewhere and runs only its own script.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline' 'self'; "
    "style-src 'unsafe-inline'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Flotilla fleet</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2433; }
  h1 { font-size: 1.4rem; margin: 0 0 .2rem; }
  h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
  .muted { color: #667085; }
  form { margin: 1rem 0; display: flex; gap: .5rem; align-items: center; }
  input[type=text] { width: 28rem; padding: .35rem .5rem; font: inherit; }
  button { padding: .35rem .9rem; font: inherit; cursor: pointer; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e4e7ec; }
  th { background: #f2f4f7; font-weight: 600; }
  .label { display: inline-block; background: #eef4ff; border-radius: 4px; margin: 1px 2px;
           padding: 0 .35rem; font-size: 12px; }
  .healthy, .ok, .succeeded { color: #067647; }
  .degraded, .expiring, .running, .paused { color: #b54708; }
  .unreachable, .expired, .halted, .failed, .aborted { color: #b42318; font-weight: 600; }
  #error { color: #b42318; margin: .5rem 0; }
</style>
</head>
<body>
<h1>Flotilla fleet</h1>
<div class="muted" id="generated">loading…</div>
<form id="filter">
  <label for="selector">Selector</label>
  <input type="text" id="selector" name="selector" placeholder="env=prod,region in (eu,us)">
  <button type="submit" id="apply">Apply</button>
  <button type="button" id="clear">Clear</button>
</form>
<div id="error" role="alert"></div>
<div id="summary"></div>
<h2>Clusters</h2>
<table id="clusters">
  <thead><tr><th>Cluster</th><th>Labels</th><th>Version</th><th>Health</th><th>Phase</th>
  <th>Lock holder</th><th>Soonest certificate expiry</th><th>Drifted fields</th></tr></thead>
  <tbody></tbody>
</table>
<h2>Running operations</h2>
<table id="operations">
  <thead><tr><th>Operation</th><th>Kind</th><th>Progress</th><th>Clusters</th>
  <th>Started</th></tr></thead>
  <tbody></tbody>
</table>
<script>
"use strict";
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  sessionStorage.setItem("flotilla-token", fragment.get("token"));
  history.replaceState(null, "", location.pathname + location.search);
}
const input = document.getElementById("selector");
input.value = new URLSearchParams(location.search).get("selector") || "";

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function days(iso) {
  const left = (new Date(iso) - Date.now()) / 86400000;
  return left < 0 ? "expired" : Math.floor(left) + " days";
}

function render(data) {
  document.getElementById("generated").textContent =
    "as of " + new Date(data.generated_at).toLocaleString() + " · refreshed every 15 s";
  const body = document.querySelector("#clusters tbody");
  body.replaceChildren();
  const health = {};
  for (const c of data.clusters) {
    health[c.health] = (health[c.health] || 0) + 1;
    const row = body.insertRow();
    row.dataset.cluster = c.name;
    cell(row, c.name);
    const labels = row.insertCell();
    for (const [k, v] of Object.entries(c.labels).sort()) {
      const span = document.createElement("span");
      span.className = "label";
      span.textContent = k + "=" + v;
      labels.appendChild(span);
    }
    cell(row, c.version || "?");
    cell(row, c.health, c.health).title = c.health_reason || "";
    cell(row, c.phase);
    cell(row, c.lock_holder ? c.lock_holder + " (" + c.lock_operation + ")" : "");
    cell(row, c.cert_expiry ? c.cert_expiry.slice(0, 10) + " (" + days(c.cert_expiry) + ")"
      : "not scanned", c.cert_status);
    cell(row, c.drifted_fields === null ? "not swept" : String(c.drifted_fields),
      c.drifted_fields ? "expiring" : "");
  }
  const counts = Object.entries(health).map(([h, n]) => n + " " + h).join(", ");
  const n = data.clusters.length;
  document.getElementById("summary").textContent =
    n + (n === 1 ? " cluster" : " clusters") + (counts ? ": " + counts : "") +
    (data.selector ? " matching " + data.selector : "");
  const ops = document.querySelector("#operations tbody");
  ops.replaceChildren();
  for (const o of data.operations) {
    const row = ops.insertRow();
    row.dataset.operation = o.id;
    const link = document.createElement("a");
    link.href = o.url;
    link.textContent = o.id;
    link.rel = "noopener";
    link.target = "_blank";
    row.insertCell().appendChild(link);
    cell(row, o.kind);
    cell(row, o.progress || o.outcome, o.outcome);
    cell(row, o.clusters.join(", "));
    cell(row, o.started ? new Date(o.started).toLocaleString() : "");
  }
  if (!data.operations.length) cell(ops.insertRow(), "none running").colSpan = 5;
  document.body.dataset.loaded = "true";
}

async function load() {
  const selector = input.value.trim();
  const headers = {Accept: "application/json"};
  const token = sessionStorage.getItem("flotilla-token");
  if (token) headers.Authorization = "Bearer " + token;
  const url = "v1/overview" + (selector ? "?selector=" + encodeURIComponent(selector) : "");
  const error = document.getElementById("error");
  try {
    const response = await fetch(url, {headers});
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || data.detail || response.statusText);
    error.textContent = "";
    render(data);
  } catch (e) {
    error.textContent = "Could not load the fleet: " + e.message;
    document.body.dataset.loaded = "error";
  }
}

document.getElementById("filter").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = input.value.trim() ? "?selector=" + encodeURIComponent(input.value.trim()) : "";
  history.replaceState(null, "", location.pathname + query);
  document.body.dataset.loaded = "";
  load();
});
document.getElementById("clear").addEventListener("click", () => {
  input.value = "";
  document.getElementById("filter").requestSubmit();
});
load();
setInterval(load, 15000);
</script>
</body>
</html>
"""
