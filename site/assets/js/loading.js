// The loading page: follow /build/<provider>/<spec> and open the session when it is ready.
// Everything comes from `location`, so the page works from any static host too (only the
// time estimate and the server-side cancel need binderless behind it).

import {
  PHASES, buildStep, parseLaunchPath, pathToOpen, providerById, sessionUrl, shortName, specRef,
  splitSpec,
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
  cancelled: "Launch cancelled.",
};

const TITLE_VERB = {
  connecting: "Starting", waiting: "Starting", fetching: "Fetching", building: "Building",
  pushing: "Building", built: "Launching", launching: "Launching",
};

// Where the bar stands at the start of each phase, in percent; building fills up to
// "pushing" as the build log's step counts come in (see buildStep).
const PROGRESS = { waiting: 4, fetching: 12, building: 25, pushing: 72, built: 80, launching: 88, ready: 100 };

// The four milestones shown under the bar, and the phases each one covers.
const STEP_OF_PHASE = {
  waiting: "waiting", fetching: "fetching", building: "building", pushing: "building",
  built: "building", launching: "launching", ready: "launching",
};
const STEP_ORDER = ["waiting", "fetching", "building", "launching"];

const FAVICON = {
  active: "/favicon-building.svg", ready: "/favicon-ready.svg", failed: "/favicon-failed.svg",
};

// Terminal colours and cursor moves, which build tools print and a page cannot show.
const ANSI_RE = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]/g;
// Lines that name what went wrong, in the output of pip, uv, conda, apt, git and Docker.
const ERROR_LINE_RE = /^\s*(?:E:|ERROR\b|error\b|Error\b|fatal\b|FATAL\b|×)|\b[A-Za-z]*Error:|No matching distribution|\bnot found\b|PackagesNotFoundError|ResolutionImpossible|\bcannot\b|\bcould not\b|Traceback \(most recent/i;

const TIPS = [
  "Later launches of the same environment skip the build and start in seconds. Only changes to the environment files (requirements.txt, environment.yml, …) cause a new build.",
  "Pin your package versions (numpy==2.1.3 rather than numpy) so that the environment builds the same way every time.",
  "Sessions stop after a while without activity, and nothing in them is kept: download the files you change.",
  "Add ?labpath=path/to/notebook.ipynb to a launch link to open that notebook as soon as JupyterLab starts.",
  "Links made for mybinder.org work on this server too: keep the path of the link and swap the host.",
  "A README badge makes a repository one click away: the home page writes it for Markdown, reStructuredText and HTML.",
  "Keep large data out of the repository: fetch it in the notebook, or in a postBuild script, so that the fetch stays quick.",
  "Launch a specific commit or tag rather than a branch when you want every reader to see exactly the same thing.",
];
const TIP_SECONDS = 12;

const $ = (id) => document.getElementById(id);

const el = {
  main: $("launch"),
  favicon: $("favicon"),
  source: $("source"),
  heading: $("heading"),
  progress: $("progress"),
  fill: $("progress-fill"),
  steps: $("steps"),
  status: $("status"),
  detail: $("status-detail"),
  estimate: $("estimate"),
  elapsed: $("elapsed"),
  actions: $("launch-actions"),
  cancel: $("cancel"),
  failure: $("failure"),
  failureHeading: $("failure-heading"),
  failureMessage: $("failure-message"),
  failing: $("failing"),
  failingText: $("failing-text"),
  showFailing: $("show-failing"),
  advice: $("advice"),
  docsLink: $("docs-link"),
  tryAgain: $("try-again"),
  launchAnother: $("launch-another"),
  cancelled: $("cancelled"),
  cancelledHeading: $("cancelled-heading"),
  startAgain: $("start-again"),
  lost: $("lost"),
  lostHeading: $("lost-heading"),
  retry: $("retry"),
  redirect: $("redirect"),
  redirectLink: $("redirect-link"),
  tips: $("tips"),
  tip: $("tip"),
  tipPause: $("tip-pause"),
  tipNext: $("tip-next"),
  log: $("log"),
  logRaw: $("log-raw"),
  logToggle: $("log-toggle"),
  logRawToggle: $("log-raw-toggle"),
  logDownload: $("log-download"),
  logCount: $("log-count"),
};

const state = {
  target: parseLaunchPath(location.pathname),
  urlpath: pathToOpen(location.search),
  // The saved changes of an ended session this launch puts back (restore links only).
  restore: new URLSearchParams(location.search).get("restore") || "",
  name: "",
  from: "", // "GitHub · ref main", for the line above the name
  phase: "", // the furthest phase reached, "" before the first event
  steps: null, // {n, m} from the last "Step N/M" line
  source: null, // the EventSource
  lastEventId: "", // "<launch id>:<seq>" of the last event, to resume after a lost connection
  launchId: "",
  done: false, // a final event arrived, the reader cancelled, or the page gave up
  raw: [], // the log exactly as received
  lines: [], // the log as shown: one entry per line, colours removed
  logOpen: false,
  logRawView: false,
  estimate: null, // {deadline, typical, samples} from /api/launches/<id>/estimate
  estimateAsked: false,
  started: 0,
  timer: 0,
  tip: -1,
  tipTimer: 0,
  tipsPaused: false,
  tipsHeld: 0, // pointer or focus inside the tips: do not rotate under the reader's eyes
};

// ----- small view helpers -------------------------------------------------------------

// The site's name as the served page's title ends with it (an operator's brand, or ours).
const SITE_NAME = document.title.includes(" | ") ? document.title.split(" | ").pop() : "binderless";

function setTitle(text) {
  document.title = `${text} | ${SITE_NAME}`;
}

function setFavicon(kind) {
  el.favicon.href = FAVICON[kind] || "/favicon.svg";
}

function setStatus(text) {
  if (el.status.textContent !== text) el.status.textContent = text;
  el.progress.setAttribute("aria-valuetext", text);
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

/** "40 seconds", "about 3 minutes": how people say a duration. */
function formatDuration(seconds) {
  const s = Math.max(1, Math.round(seconds));
  if (s < 60) return `${s} second${s === 1 ? "" : "s"}`;
  const m = Math.round(s / 60);
  return `about ${m} minute${m === 1 ? "" : "s"}`;
}

function tick() {
  el.elapsed.textContent = formatElapsed(Date.now() - state.started);
  renderEstimate();
}

function startClock() {
  state.started = Date.now();
  el.elapsed.textContent = "0:00";
  clearInterval(state.timer);
  state.timer = setInterval(tick, 1000);
}

function stopClock() {
  clearInterval(state.timer);
  state.timer = 0;
}

// ----- the log ------------------------------------------------------------------------

/** Terminal output as a page shows it: colours removed, a line rewritten with "\r"
 *  (progress bars) kept as its last version. */
function cleanLines(text) {
  return text.replace(ANSI_RE, "").replace(/\r\n/g, "\n").replace(/\n$/, "").split("\n")
    .map((line) => line.slice(line.lastIndexOf("\r") + 1));
}

function updateLogControls() {
  const open = state.logOpen;
  el.log.hidden = !open || state.logRawView;
  el.logRaw.hidden = !open || !state.logRawView;
  el.logToggle.setAttribute("aria-expanded", String(open));
  el.logToggle.textContent = open ? "Hide log" : "Show log";
  el.logRawToggle.hidden = !open;
  el.logDownload.hidden = !open;
  el.logRawToggle.setAttribute("aria-pressed", String(state.logRawView));
  if (open && state.logRawView) el.logRaw.textContent = state.raw.join("");
}

function setLogOpen(open) {
  state.logOpen = open;
  updateLogControls();
  const view = state.logRawView ? el.logRaw : el.log;
  if (open) view.scrollTop = view.scrollHeight;
}

function appendLog(message) {
  if (!message) return;
  const text = message.endsWith("\n") ? message : message + "\n";
  state.raw.push(text);
  // Follow the end of the log unless the reader has scrolled up to read something.
  const atEnd = el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 40;
  const lines = cleanLines(text);
  state.lines.push(...lines);
  el.log.append(document.createTextNode(lines.join("\n") + "\n"));
  const count = state.lines.length;
  el.logCount.textContent = `(${count} ${count === 1 ? "line" : "lines"})`;
  if (state.logOpen && state.logRawView) el.logRaw.append(document.createTextNode(text));
  if (atEnd && state.logOpen) el.log.scrollTop = el.log.scrollHeight;
}

function downloadLog() {
  // A fresh file each time: the log may have grown since the last click. The browser
  // follows the link after this handler, to the address set here.
  const blob = new Blob([state.raw.join("")], { type: "text/plain;charset=utf-8" });
  const old = el.logDownload.href;
  el.logDownload.href = URL.createObjectURL(blob);
  el.logDownload.download = `binderless-${(state.name || "launch").replace(/[^A-Za-z0-9._-]+/g, "-")}.log`;
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
}

/** The line of the log most likely to say what failed, among the `upTo` first lines:
 *  the last one that reads like an error, else the last non-empty one. */
function failingLine(upTo) {
  const lines = state.lines.slice(0, upTo);
  const from = Math.max(0, lines.length - 40);
  let fallback = -1;
  for (let i = lines.length - 1; i >= from; i -= 1) {
    const line = lines[i].trim();
    if (!line) continue;
    if (fallback === -1) fallback = i;
    if (ERROR_LINE_RE.test(line)) return i;
  }
  return fallback;
}

/** Draw the log again with one line marked. */
function markLogLine(index) {
  el.log.replaceChildren();
  const before = state.lines.slice(0, index).join("\n");
  if (before) el.log.append(document.createTextNode(before + "\n"));
  const mark = document.createElement("mark");
  mark.id = "log-failing-line";
  mark.textContent = state.lines[index];
  el.log.append(mark, document.createTextNode("\n"));
  const after = state.lines.slice(index + 1).join("\n");
  if (after) el.log.append(document.createTextNode(after + "\n"));
}

// ----- the estimate -------------------------------------------------------------------

async function askEstimate() {
  if (state.estimateAsked || !state.launchId) return;
  state.estimateAsked = true;
  let data;
  try {
    const response = await fetch(`/api/launches/${encodeURIComponent(state.launchId)}/estimate`,
      { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    data = await response.json();
  } catch {
    return; // a static host or an older server: no estimate, nothing to say
  }
  if (state.done || !data || typeof data !== "object") return;
  if (typeof data.typical_seconds === "number" && typeof data.remaining_seconds === "number") {
    state.estimate = {
      deadline: Date.now() + data.remaining_seconds * 1000,
      typical: data.typical_seconds,
      samples: Number(data.samples) || 1,
    };
    renderEstimate();
  } else if (data.built) {
    el.estimate.textContent = "This environment has not been built on this server before, so "
      + "there is no estimate yet. A first build takes from one to several minutes.";
    el.estimate.hidden = false;
  }
}

function renderEstimate() {
  if (!state.estimate || state.done) return;
  const { deadline, typical, samples } = state.estimate;
  const left = (deadline - Date.now()) / 1000;
  const basis = `${samples} earlier launch${samples === 1 ? "" : "es"} of this environment`;
  const remaining = formatDuration(left);
  el.estimate.textContent = left >= 1
    ? `${remaining[0].toUpperCase()}${remaining.slice(1)} left, going by ${basis} `
      + `(${formatDuration(typical)} in all).`
    : `Taking longer than the ${basis} (${formatDuration(typical)} in all). It is still going.`;
  el.estimate.hidden = false;
}

function hideEstimate() {
  state.estimate = null;
  el.estimate.hidden = true;
}

// ----- tips ---------------------------------------------------------------------------

function showTip(index) {
  state.tip = (index + TIPS.length) % TIPS.length;
  el.tip.textContent = TIPS[state.tip];
}

function scheduleTips() {
  clearInterval(state.tipTimer);
  state.tipTimer = 0;
  if (state.tipsPaused || state.done) return;
  state.tipTimer = setInterval(() => {
    if (!state.tipsHeld) showTip(state.tip + 1);
  }, TIP_SECONDS * 1000);
}

function setTipsPaused(paused) {
  state.tipsPaused = paused;
  el.tipPause.setAttribute("aria-pressed", String(paused));
  scheduleTips();
}

function stopTips() {
  clearInterval(state.tipTimer);
  state.tipTimer = 0;
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
  if (phase === "ready") {
    setTitle(`Ready: ${state.name}`);
    return;
  }
  const count = phase === "building" && state.steps ? ` (${state.steps.n}/${state.steps.m})` : "";
  setTitle(`${TITLE_VERB[phase]}${count}… ${state.name}`);
  if (["building", "pushing", "built", "launching"].includes(phase)) askEstimate();
}

function lastLine(message) {
  const line = cleanLines(String(message || "").trim()).pop().trim();
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

  if (phase === "failed") {
    const before = state.lines.length;
    appendLog(message);
    fail(message || "The launch failed, and the server gave no reason.", data.status_code, before, data);
    return;
  }
  appendLog(message);
  if (phase === "ready") {
    ready(data);
    return;
  }
  if (phase === "building" || (!phase && state.phase === "building")) {
    const step = buildStep(message.replace(ANSI_RE, ""));
    if (step) state.steps = step;
  }
  if (PHASES.includes(phase)) showPhase(phase);
  else if (state.phase === "building") showPhase("building"); // refresh the step count
  if (lastLine(message)) setDetail(lastLine(message));
}

// ----- what to try after a failure ----------------------------------------------------

/** The kind of failure: the repository's own (the server says so with `fault`), else from
 *  the status code the server sent and the phase it reached. */
function failureKind(statusCode, phase, fault) {
  if (fault === "repository") return "repository";
  const code = Number(statusCode) || 0;
  const byCode = { 400: "bad-link", 403: "not-allowed", 404: "not-found", 422: "unsupported",
    429: "busy", 503: "unavailable" };
  if (byCode[code]) return byCode[code];
  if (["fetching", "building", "pushing"].includes(phase)) return "build-failed";
  if (["built", "launching"].includes(phase)) return "start-failed";
  return "other";
}

// Failures that may pass when tried again; the others repeat until something changes.
const TRANSIENT = new Set(["busy", "unavailable", "other", "start-failed"]);

// Where the files a repository is built from are explained, by file name.
const FILE_DOCS = [
  [/(^|\/)requirements[^/]*\.txt$/, "requirements.txt", "requirements-txt-install-a-python-environment"],
  [/(^|\/)environment\.ya?ml$/, "environment.yml", "environment-yml-install-a-conda-environment"],
  [/(^|\/)postBuild$/, "postBuild", "postbuild-run-code-after-installing-the-environment"],
  [/(^|\/)Pipfile(\.lock)?$/, "Pipfile", "pipfile-and-or-pipfile-lock-install-a-python-environment"],
  [/(^|\/)setup\.py$/, "setup.py", "setup-py-install-python-packages"],
  [/(^|\/)runtime\.txt$/, "runtime.txt", "runtime-txt-specifying-runtimes"],
];
const CONFIG_DOCS = "https://repo2docker.readthedocs.io/en/latest/config_files.html";

/** The docs of a file kind, as {text, href}, or null for a file without its own. */
function fileDocs(file) {
  const found = FILE_DOCS.find(([pattern]) => pattern.test(file || ""));
  return found ? { text: `How to write ${found[1]}`, href: `${CONFIG_DOCS}#${found[2]}` } : null;
}

/** Where a person can see the file at fault, for the hosts whose file pages are known. */
function fileUrl(file, line) {
  const { provider, spec } = state.target || {};
  if (!file || !["gh", "gl"].includes(provider)) return "";
  const { repo, ref } = splitSpec(provider, spec);
  const path = file.split("/").map(encodeURIComponent).join("/");
  const host = provider === "gh" ? "https://github.com" : "https://gitlab.com";
  const blob = provider === "gh" ? "blob" : "-/blob";
  return `${host}/${repo}/${blob}/${encodeURIComponent(ref || "HEAD")}/${path}${line ? `#L${line}` : ""}`;
}

const ADVICE = {
  repository: {
    docs: "The build failed",
    items: [
      "This failure comes from the repository's own files, not from this server: launching again fails the same way until the repository changes.",
      "Fix the file named above, commit the change, and launch again.",
    ],
  },
  "bad-link": {
    docs: "The link is not a launch link",
    items: [
      "Check the link for a typing mistake: launch links look like /v2/gh/<org>/<repo>/<ref>.",
      "Build a new link on the home page from the repository's address.",
    ],
  },
  "not-allowed": {
    docs: "This server does not launch the repository",
    items: [
      "This server's operators do not allow this repository or source.",
      "Launch it on another Binder server: the same link works there with its host swapped.",
    ],
  },
  "not-found": {
    docs: "The repository or ref was not found",
    items: [
      "Check that the repository exists and is public.",
      "Check the ref: the branch, tag or commit must exist (a branch renamed from master to main needs the new name).",
    ],
  },
  unsupported: {
    docs: "This server cannot build the repository",
    items: [
      "The message above names what the repository needs that this server's builder cannot build.",
      "Change the environment files to ones this server builds, or launch on a server with a Docker builder.",
    ],
  },
  busy: {
    docs: "The server is full",
    items: ["Too many sessions are running. Try again in a few minutes."],
  },
  unavailable: {
    docs: "A service did not answer",
    items: ["The repository's host or this server's storage did not answer. Try again in a minute."],
  },
  "build-failed": {
    docs: "The build failed",
    items: [
      "Read the line that failed: it usually names the package, version or command at fault.",
      "Fix the environment files: a misspelt package, a version that does not exist, or a postBuild script that stops with an error.",
      "Install the same files on your own computer to see the same error (the log's first lines say which builder this server uses: uv or repo2docker).",
    ],
  },
  "start-failed": {
    docs: "JupyterLab did not start",
    items: [
      "The environment was built, but its Jupyter server did not start: check the repository's start script, if it has one.",
      "Make sure the environment does not pin an old jupyterlab or notebook that conflicts with the rest.",
    ],
  },
  other: {
    docs: "Something else went wrong",
    items: [
      "Try again: a launch that failed once may work the second time.",
      "If it keeps failing, tell the operators of this server, with the log.",
    ],
  },
};

function showAdvice(kind, data = {}) {
  const advice = ADVICE[kind];
  const items = advice.items.map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    return item;
  });
  const url = kind === "repository" ? fileUrl(data.file, data.line) : "";
  if (url) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = url;
    link.id = "file-link";
    link.textContent = `Open ${data.file}` + (data.line ? ` at line ${data.line}` : "");
    item.append(link, " in the repository.");
    items.push(item);
  }
  el.advice.replaceChildren(...items);
  const docs = kind === "repository" ? fileDocs(data.file) : null;
  el.docsLink.href = docs ? docs.href : `/help.html#${kind === "repository" ? "build-failed" : kind}`;
  el.docsLink.textContent = docs ? docs.text : advice.docs;
  el.failure.dataset.kind = kind;
  // Try again only where it may help; elsewhere the way on is another repository.
  el.tryAgain.hidden = !TRANSIENT.has(kind);
  el.launchAnother.classList.toggle("button", !TRANSIENT.has(kind));
  el.launchAnother.classList.toggle("primary", !TRANSIENT.has(kind));
}

// ----- endings ------------------------------------------------------------------------

function close() {
  if (state.source) {
    state.source.close();
    state.source = null;
  }
  stopClock();
}

function finish(kind) {
  el.main.dataset.state = kind;
  el.actions.hidden = true;
  hideEstimate();
  if (kind !== "lost") {
    stopTips();
    el.tips.hidden = true; // nothing to wait for any more
  }
}

function ready(data) {
  state.done = true;
  close();
  showPhase("ready");
  finish("ready");
  setFavicon("ready");
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

function fail(message, statusCode, logLines = state.lines.length, data = {}) {
  const reached = state.phase;
  const kind = failureKind(statusCode, reached, data.fault);
  state.done = true;
  close();
  finish("failed");
  el.main.dataset.phase = "failed";
  setStatus(STATUS.failed);
  // A status code means something only when the server itself is in question.
  setDetail(statusCode && TRANSIENT.has(kind) ? `The server answered with status ${statusCode}.` : "");
  setTitle(`Failed: ${state.name}`);
  setFavicon("failed");
  if (state.from) el.source.textContent = `Could not launch from ${state.from}`;
  el.failureMessage.textContent = String(message).trimEnd();
  el.failureHeading.textContent = kind === "repository"
    ? `The repository${data.file ? `'s ${data.file}` : ""} needs a fix` : "Why it failed";
  showAdvice(kind, data);
  const index = ["build-failed", "start-failed", "repository"].includes(kind) ? failingLine(logLines) : -1;
  if (index >= 0) markLogLine(index);
  // The server's message names the cause of a repository's failure: shown once, there,
  // with the log closed. Otherwise the log's failing line is the best clue.
  if (index >= 0 && kind !== "repository") {
    el.failingText.textContent = state.lines[index].trim();
    el.failing.hidden = false;
  }
  el.failure.hidden = false;
  el.lost.hidden = true;
  setLogOpen(kind !== "repository");
  const mark = document.getElementById("log-failing-line");
  if (mark) el.log.scrollTop = Math.max(0, mark.offsetTop - el.log.offsetTop - 40);
  el.failureHeading.focus({ preventScroll: true });
}

function cancel() {
  if (state.done) return;
  state.done = true;
  const launchId = state.launchId;
  close();
  finish("cancelled");
  setStatus(STATUS.cancelled);
  setDetail("");
  setTitle(`Cancelled: ${state.name}`);
  setFavicon("");
  el.cancelled.hidden = false;
  el.cancelledHeading.focus({ preventScroll: true });
  if (launchId) {
    // Ask the server to stop the launch; the page has stopped following it either way.
    fetch(`/api/launches/${encodeURIComponent(launchId)}/cancel`, { method: "POST", keepalive: true })
      .catch(() => {});
  }
}

function lostConnection() {
  close();
  finish("lost");
  setStatus(STATUS.lost);
  setDetail("");
  setTitle(`Disconnected: ${state.name}`);
  setFavicon("failed");
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
  el.actions.hidden = false;
  setProgress(1);
  setSteps("");
  setStatus(STATUS.connecting);
  setDetail("");
  setTitle(`Starting… ${state.name}`);
  setFavicon("active");
  startClock();
  scheduleTips();

  // After a lost connection, resume the same launch where it stopped (a new EventSource
  // cannot send Last-Event-ID itself, so the id travels in the query).
  // The path it will open travels too: a signed-in person's project remembers it for its
  // Open button (BinderHub ignores the parameter; thebe never sends it).
  const query = new URLSearchParams();
  if (state.lastEventId) query.set("last_event_id", state.lastEventId);
  if (state.urlpath) query.set("urlpath", state.urlpath);
  if (state.restore) query.set("restore", state.restore);
  const resume = query.toString() ? `?${query}` : "";
  const source = new EventSource(`/build/${provider}/${spec}${resume}`);
  state.source = source;
  source.onmessage = (event) => {
    if (state.source !== source || state.done) return;
    if (event.lastEventId) {
      state.lastEventId = event.lastEventId;
      state.launchId = event.lastEventId.split(":")[0];
    }
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
  el.logToggle.addEventListener("click", () => setLogOpen(!state.logOpen));
  el.logRawToggle.addEventListener("click", () => {
    state.logRawView = !state.logRawView;
    setLogOpen(true);
  });
  el.logDownload.addEventListener("click", downloadLog);
  el.showFailing.addEventListener("click", () => {
    state.logRawView = false;
    setLogOpen(true);
    const mark = document.getElementById("log-failing-line");
    if (mark) {
      el.log.scrollTop = Math.max(0, mark.offsetTop - el.log.offsetTop - 40);
      el.log.focus();
    }
  });
  el.cancel.addEventListener("click", cancel);
  el.tryAgain.addEventListener("click", () => location.reload());
  el.startAgain.addEventListener("click", () => location.reload());
  el.retry.addEventListener("click", () => {
    appendLog("--- Reconnecting ---");
    connect();
  });
  el.tipNext.addEventListener("click", () => {
    showTip(state.tip + 1);
    scheduleTips(); // a full interval before the next change
  });
  el.tipPause.addEventListener("click", () => setTipsPaused(!state.tipsPaused));
  for (const [enter, leave] of [["pointerenter", "pointerleave"], ["focusin", "focusout"]]) {
    el.tips.addEventListener(enter, () => { state.tipsHeld += 1; });
    el.tips.addEventListener(leave, () => { state.tipsHeld = Math.max(0, state.tipsHeld - 1); });
  }
  showTip(Math.floor(Math.random() * TIPS.length));

  if (!state.target) {
    state.name = "this link";
    el.source.textContent = "Not a launch link";
    showName("Nothing to launch");
    fail("This address is not a launch link. Launch links look like "
      + `${location.origin}/v2/gh/<org>/<repo>/<ref>.`, 400);
    return;
  }
  describe();
  if (state.restore) connect();
  else offerSavedChanges().then((offered) => { if (!offered) connect(); });
}

// ----- changes kept from an ended session (server: restore.py) ------------------------

/** This browser's saved changes of this link, if the server keeps any; else null. */
async function savedChanges() {
  const { provider, spec } = state.target;
  try {
    const answer = await fetch(`/api/restores?launch=${encodeURIComponent(`v2/${provider}/${spec}`)}`,
      { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!answer.ok) return null;
    const data = await answer.json();
    return (data.restores || [])[0] || null;
  } catch {
    return null; // a static host, or the network blinked: launch as usual
  }
}

/** Offer "Start again with your changes" before launching; true when offered (the
 *  visitor's choice then starts the launch). */
async function offerSavedChanges() {
  const saved = await savedChanges();
  if (!saved) return false;
  const offer = $("restore-offer");
  const link = new URL(saved.link, location.origin);
  for (const name of ["labpath", "filepath", "urlpath"]) {
    const value = new URLSearchParams(location.search).get(name);
    if (value) link.searchParams.set(name, value);
  }
  const count = saved.file_count;
  const until = new Date(saved.expires_at * 1000).toLocaleString();
  $("restore-text").textContent = `The ${count} file${count === 1 ? "" : "s"} you created or `
    + `changed in your last session of this link ${count === 1 ? "is" : "are"} kept for this `
    + `browser until ${until}. Start again with them, in a new session of the same commit, `
    + "or start from the repository.";
  $("restore-start").href = link.pathname + link.search;
  el.actions.hidden = true;
  setStatus("Your changes from the last session are kept.");
  offer.hidden = false;
  $("restore-fresh").addEventListener("click", () => {
    offer.hidden = true;
    connect();
  }, { once: true });
  $("restore-heading").focus();
  return true;
}

init();
