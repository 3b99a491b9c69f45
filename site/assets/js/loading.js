// The loading page: follow /build/<provider>/<spec> and open the session when it is ready.
// Everything comes from `location`, so the page works from any static host too.

import {
  PHASES, parseLaunchPath, pathToOpen, providerById, sessionUrl, shortName, specRef,
} from "/assets/js/binder.js";

const STATUS = {
  connecting: "Connecting to the server…",
  waiting: "Waiting for the build to start…",
  fetching: "Fetching the repository…",
  building: "Building the environment…",
  pushing: "Saving the environment…",
  built: "Environment ready. Starting the server…",
  launching: "Starting JupyterLab…",
  ready: "Ready. Opening JupyterLab…",
  failed: "Launch failed.",
  lost: "Connection lost.",
};

const TITLE_VERB = {
  connecting: "Starting", waiting: "Starting", fetching: "Fetching", building: "Building",
  pushing: "Building", built: "Launching", launching: "Launching",
};

// Where the bar stands at the start of each phase, in percent; building fills up to
// "pushing" as "Step N/M" lines come in.
const PROGRESS = { waiting: 4, fetching: 12, building: 25, pushing: 72, built: 80, launching: 88, ready: 100 };

// The four milestones shown under the bar, and the phases each one covers.
const STEP_OF_PHASE = {
  waiting: "waiting", fetching: "fetching", building: "building", pushing: "building",
  built: "building", launching: "launching", ready: "launching",
};
const STEP_ORDER = ["waiting", "fetching", "building", "launching"];

const STEP_RE = /Step\s+(\d+)\s*\/\s*(\d+)/;
const FINAL = new Set(["ready", "failed"]);

const $ = (id) => document.getElementById(id);

const el = {
  main: $("launch"),
  source: $("source"),
  heading: $("heading"),
  progress: $("progress"),
  fill: $("progress-fill"),
  steps: $("steps"),
  status: $("status"),
  detail: $("status-detail"),
  elapsed: $("elapsed"),
  failure: $("failure"),
  failureHeading: $("failure-heading"),
  failureMessage: $("failure-message"),
  tryAgain: $("try-again"),
  lost: $("lost"),
  lostHeading: $("lost-heading"),
  retry: $("retry"),
  redirect: $("redirect"),
  redirectLink: $("redirect-link"),
  log: $("log"),
  logToggle: $("log-toggle"),
  logCount: $("log-count"),
};

const state = {
  target: parseLaunchPath(location.pathname),
  urlpath: pathToOpen(location.search),
  name: "",
  from: "", // "GitHub · ref main", for the line above the name
  phase: "", // the furthest phase reached, "" before the first event
  steps: null, // {n, m} from the last "Step N/M" line
  source: null, // the EventSource
  lastEventId: "", // the id of the last event received, to resume after a lost connection
  done: false, // a final event arrived (or the page gave up)
  lines: 0,
  started: 0,
  timer: 0,
};

// ----- small view helpers -------------------------------------------------------------

function setTitle(text) {
  document.title = `${text} | binderless`;
}

function setStatus(text) {
  if (el.status.textContent !== text) el.status.textContent = text;
}

function setDetail(text) {
  el.detail.textContent = text;
}

function setProgress(percent) {
  const value = Math.max(0, Math.min(100, Math.round(percent)));
  el.fill.style.width = `${value}%`;
  el.progress.setAttribute("aria-valuenow", String(value));
}

function setSteps(phase) {
  const current = STEP_ORDER.indexOf(STEP_OF_PHASE[phase] || "");
  for (const item of el.steps.children) {
    const index = STEP_ORDER.indexOf(item.dataset.step);
    const done = index < current || phase === "ready";
    item.classList.toggle("done", done);
    item.classList.toggle("current", index === current && !done);
    if (index === current && !done) item.setAttribute("aria-current", "step");
    else item.removeAttribute("aria-current");
  }
}

function formatElapsed(ms) {
  const seconds = Math.floor(ms / 1000);
  const m = Math.floor(seconds / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return `${m}:${s}`;
}

function startClock() {
  state.started = Date.now();
  el.elapsed.textContent = "0:00";
  clearInterval(state.timer);
  state.timer = setInterval(() => {
    el.elapsed.textContent = formatElapsed(Date.now() - state.started);
  }, 1000);
}

function stopClock() {
  clearInterval(state.timer);
  state.timer = 0;
}

// ----- the log ------------------------------------------------------------------------

function setLogOpen(open) {
  el.log.hidden = !open;
  el.logToggle.setAttribute("aria-expanded", String(open));
  el.logToggle.textContent = open ? "Hide log" : "Show log";
  if (open) el.log.scrollTop = el.log.scrollHeight;
}

function appendLog(message) {
  if (!message) return;
  const text = message.endsWith("\n") ? message : message + "\n";
  // Follow the end of the log unless the reader has scrolled up to read something.
  const atEnd = el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 40;
  el.log.append(document.createTextNode(text));
  state.lines += (text.match(/\n/g) || []).length;
  el.logCount.textContent = `(${state.lines} ${state.lines === 1 ? "line" : "lines"})`;
  if (atEnd && !el.log.hidden) el.log.scrollTop = el.log.scrollHeight;
}

// ----- phases -------------------------------------------------------------------------

function buildingStatus() {
  if (!state.steps) return STATUS.building;
  return `Building the environment: step ${state.steps.n} of ${state.steps.m}…`;
}

function buildingProgress() {
  const start = PROGRESS.building;
  if (!state.steps || !state.steps.m) return start;
  const fraction = Math.min(1, state.steps.n / state.steps.m);
  return start + fraction * (PROGRESS.pushing - start - 2);
}

/** Move the view to `phase`, never backwards (log lines repeat or omit the phase). */
function showPhase(phase) {
  if (PHASES.indexOf(phase) < PHASES.indexOf(state.phase)) return;
  state.phase = phase;
  el.main.dataset.phase = phase;
  setSteps(phase);
  if (phase === "building") {
    setStatus(buildingStatus());
    setProgress(buildingProgress());
  } else {
    setStatus(STATUS[phase]);
    setProgress(PROGRESS[phase]);
  }
  setTitle(phase === "ready" ? `Ready: ${state.name}` : `${TITLE_VERB[phase]}… ${state.name}`);
}

function firstLine(message) {
  const line = String(message || "").trim().split("\n").pop().trim();
  return line.length > 160 ? line.slice(0, 157) + "…" : line;
}

function onEvent(event) {
  let data;
  try {
    data = JSON.parse(event.data);
  } catch {
    appendLog(String(event.data));
    return;
  }
  if (!data || typeof data !== "object") return;
  const phase = String(data.phase || "").toLowerCase();
  const message = typeof data.message === "string" ? data.message : "";
  appendLog(message);

  if (phase === "failed") {
    fail(message || "The launch failed, and the server gave no reason.", data.status_code);
    return;
  }
  if (phase === "ready") {
    ready(data);
    return;
  }
  if (phase === "building" || (!phase && state.phase === "building")) {
    const match = STEP_RE.exec(message);
    if (match) state.steps = { n: Number(match[1]), m: Number(match[2]) };
  }
  if (PHASES.includes(phase)) showPhase(phase);
  else if (state.phase === "building") showPhase("building"); // refresh the step count
  if (firstLine(message)) setDetail(firstLine(message));
}

// ----- endings ------------------------------------------------------------------------

function close() {
  if (state.source) {
    state.source.close();
    state.source = null;
  }
  stopClock();
}

function ready(data) {
  state.done = true;
  close();
  showPhase("ready");
  el.main.dataset.state = "ready";
  if (typeof data.url !== "string" || !data.url) {
    fail("The server said the launch is ready but sent no address to open.");
    return;
  }
  let target;
  try {
    target = sessionUrl(data, state.urlpath);
  } catch {
    fail(`The server sent an address that cannot be opened: ${data.url}`);
    return;
  }
  setDetail("");
  el.redirectLink.href = target;
  el.redirect.hidden = false;
  // replace(): "back" from JupyterLab returns to the page that had the link, not to a relaunch.
  location.replace(target);
}

function fail(message, statusCode) {
  state.done = true;
  close();
  el.main.dataset.state = "failed";
  el.main.dataset.phase = "failed";
  setStatus(STATUS.failed);
  setDetail(statusCode ? `The server answered with status ${statusCode}.` : "");
  setTitle(`Failed: ${state.name}`);
  if (state.from) el.source.textContent = `Could not launch from ${state.from}`;
  el.failureMessage.textContent = String(message).trimEnd();
  el.failure.hidden = false;
  el.lost.hidden = true;
  setLogOpen(true);
  el.failureHeading.focus({ preventScroll: true });
}

function lostConnection() {
  close();
  el.main.dataset.state = "lost";
  setStatus(STATUS.lost);
  setDetail("");
  setTitle(`Disconnected: ${state.name}`);
  el.lost.hidden = false;
  el.lostHeading.focus({ preventScroll: true });
}

// ----- the stream ---------------------------------------------------------------------

function connect() {
  const { provider, spec } = state.target;
  state.done = false;
  state.phase = "";
  state.steps = null;
  el.main.dataset.state = "active";
  el.main.dataset.phase = "";
  el.lost.hidden = true;
  setProgress(1);
  setSteps("");
  setStatus(STATUS.connecting);
  setDetail("");
  setTitle(`Starting… ${state.name}`);
  startClock();

  // After a lost connection, resume the same launch where it stopped (a new EventSource
  // cannot send Last-Event-ID itself, so the id travels in the query).
  const resume = state.lastEventId ? `?last_event_id=${encodeURIComponent(state.lastEventId)}` : "";
  const source = new EventSource(`/build/${provider}/${spec}${resume}`);
  state.source = source;
  source.onmessage = (event) => {
    if (state.source !== source || state.done) return;
    if (event.lastEventId) state.lastEventId = event.lastEventId;
    onEvent(event);
  };
  // EventSource would reconnect by itself, into a second launch: stop instead, and let
  // the reader decide.
  source.onerror = () => {
    if (state.source === source && !state.done) lostConnection();
  };
}

/** Show a repository name with line-break chances after its slashes (narrow screens). */
function showName(name) {
  el.heading.replaceChildren();
  name.split("/").forEach((part, index) => {
    if (index) el.heading.append("/", document.createElement("wbr"));
    el.heading.append(part);
  });
}

function describe() {
  const { provider, spec } = state.target;
  const known = providerById(provider);
  const ref = specRef(provider, spec);
  state.name = shortName(provider, spec);
  showName(state.name);
  state.from = [known ? known.name : provider, ref ? `ref ${ref}` : ""].filter(Boolean).join(" · ");
  el.source.textContent = `Launching from ${state.from}`;
}

function init() {
  el.logToggle.addEventListener("click", () => setLogOpen(el.log.hidden));
  el.tryAgain.addEventListener("click", () => location.reload());
  el.retry.addEventListener("click", () => {
    appendLog("--- Reconnecting ---");
    connect();
  });

  if (!state.target) {
    state.name = "this link";
    el.source.textContent = "Not a launch link";
    showName("Nothing to launch");
    fail("This address is not a launch link. Launch links look like "
      + `${location.origin}/v2/gh/<org>/<repo>/<ref>.`);
    return;
  }
  describe();
  connect();
}

init();
