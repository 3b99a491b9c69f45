// The environments page: the catalogue (GET /api/environments), removing one environment
// (DELETE /api/environments/<key>) and pruning (POST /api/environments/prune).
// Everything shown comes from the server and is set as text, never as HTML.

const $ = (id) => document.getElementById(id);

function element(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// Binary units, as the command line prints them (binderless environments list).
export function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function when(seconds) {
  if (!seconds) return "never";
  return new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

async function call(method, url, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(url, init);
  let answer = {};
  try {
    answer = await response.json();
  } catch {
    answer = {};
  }
  if (!response.ok) {
    const error = new Error(answer.message || `The server answered ${response.status}.`);
    error.answer = answer;
    throw error;
  }
  return answer;
}

function showError(message) {
  $("catalogue-error").textContent = message || "";
  $("catalogue-error").hidden = !message;
}

function environmentRow(env) {
  const repos = env.repos.length
    ? env.repos.map((r) => `${r.repo_url} @ ${r.ref.slice(0, 12)} (${r.launches})`).join("\n")
    : "no launch recorded";
  const remove = element("button", { class: "button danger small", type: "button",
    text: "Remove", "data-key": env.key, "aria-label": `Remove ${env.key}` });
  if (env.in_use) {
    remove.disabled = true;
    remove.title = `In use: ${env.in_use_reason}`;
  }
  remove.addEventListener("click", () => removeEnvironment(env, remove));
  const key = element("td", { class: "key" }, element("code", { text: env.key }),
    element("span", { class: "kind", text: env.kind }));
  if (env.in_use) {
    key.append(element("span", { class: "state running", text: "in use",
      title: env.in_use_reason }));
  }
  return element("tr", { "data-key": env.key },
    key,
    element("td", { class: "num", "data-label": "Size", text: size(env.size_bytes) }),
    element("td", { class: "when", "data-label": "Built", text: when(env.built_at) }),
    element("td", { class: "when", "data-label": "Last launched",
      text: when(env.last_launched_at) }),
    element("td", { class: "num", "data-label": "Launches", text: String(env.launches) }),
    element("td", { class: "repos", "data-label": "Launched by", text: repos }),
    element("td", { class: "files", "data-label": "Built from",
      text: env.files.join(", ") || "-" }),
    element("td", { class: "act" }, remove));
}

function cacheItem(entry) {
  const state = entry.in_use ? element("span", { class: "state running", text: "in use" }) : null;
  return element("li", { class: "project", "data-key": entry.key },
    element("div", {},
      element("h3", { text: entry.detail || entry.key }, state),
      element("p", { class: "meta",
        text: `${entry.key} · ${size(entry.size_bytes)} · last used ${when(entry.last_used_at)}` })));
}

function count(items, one, bytes) {
  if (!items.length) return "none";
  return `${items.length} ${one}${items.length === 1 ? "" : "s"}, ${size(bytes)}`;
}

// The build cache: not an environment, but within the budget (GET /api/environments
// reports only what the cache alone holds; files environments link are theirs).
function cacheLine(cache) {
  if (!cache) return "";
  const shared = cache.detail ? ` (${cache.detail})` : "";
  return `The ${cache.key} (downloads and builds kept for the next build): `
    + `${size(cache.size_bytes)}${shared}.`;
}

function render(listing) {
  const envs = listing.environments;
  $("envs-empty").hidden = envs.length > 0;
  $("envs-table").hidden = envs.length === 0;
  $("envs-body").replaceChildren(...envs.map(environmentRow));
  const cache = listing.cache;
  const used = listing.environments_bytes + (cache ? cache.size_bytes : 0);
  const budget = listing.budget_bytes
    ? ` · ${size(used)} of a ${size(listing.budget_bytes)} budget` : "";
  $("envs-total").textContent = count(envs, "environment", listing.environments_bytes) + budget;
  $("cache-line").textContent = cacheLine(cache);
  $("cache-line").hidden = !cache;
  $("mirrors-list").replaceChildren(...listing.mirrors.map(cacheItem));
  $("mirrors-total").textContent = count(listing.mirrors, "mirror", listing.mirrors_bytes);
  $("checkouts-list").replaceChildren(...listing.checkouts.map(cacheItem));
  $("checkouts-total").textContent = count(listing.checkouts, "checkout", listing.checkouts_bytes);
}

async function refresh() {
  try {
    render(await call("GET", "/api/environments"));
    $("catalogue-status").hidden = true;
    showError("");
  } catch (error) {
    $("catalogue-status").hidden = true;
    showError(error.message);
  }
}

function describe(report) {
  const verb = report.dry_run ? "Would remove" : "Removed";
  const kept = report.kept.map((k) => `${k.key} (${k.reason})`).join(", ");
  const cache = report.cache
    ? ` The uv cache was ${report.cache}, freeing ${size(report.cache_freed_bytes)}.` : "";
  return `${verb} ${report.removed.length}, freeing ${size(report.freed_bytes)}.`
    + cache + (kept ? ` Kept: ${kept}.` : "");
}

async function removeEnvironment(env, button) {
  button.disabled = true;
  try {
    const report = await call("DELETE", `/api/environments/${encodeURIComponent(env.key)}`);
    $("prune-result").textContent = describe(report);
  } catch (error) {
    $("prune-result").textContent = error.message;
  }
  $("prune-result").hidden = false;
  await refresh();
}

async function prune(event) {
  event.preventDefault();
  const body = { what: $("prune-what").value };
  if ($("prune-age").value.trim()) body.older_than = $("prune-age").value.trim();
  if ($("prune-budget").value.trim()) body.budget = $("prune-budget").value.trim();
  $("prune-button").disabled = true;
  try {
    $("prune-result").textContent = describe(await call("POST", "/api/environments/prune", body));
  } catch (error) {
    $("prune-result").textContent = error.message;
  } finally {
    $("prune-button").disabled = false;
  }
  $("prune-result").hidden = false;
  await refresh();
}

if (typeof document !== "undefined" && $("envs-body")) {
  $("prune-form").addEventListener("submit", prune);
  refresh();
}
