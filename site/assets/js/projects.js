// The projects page: who is signed in, and their projects (open, stop, delete).
// Everything shown comes from /api/me and /api/projects and is set as text, never as HTML.

const REFRESH_MS = 3000;

const $ = (id) => document.getElementById(id);
let confirming = ""; // the project whose deletion is being confirmed: no refresh meanwhile
let timer = 0;

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

function size(bytes) {
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function ago(seconds) {
  if (!seconds) return "never";
  const delta = Math.max(0, Date.now() / 1000 - seconds);
  if (delta < 60) return "just now";
  const steps = [["minute", 60], ["hour", 3600], ["day", 86400]];
  let [name, span] = steps[0];
  for (const step of steps) if (delta >= step[1]) [name, span] = step;
  const count = Math.floor(delta / span);
  return `${count} ${name}${count === 1 ? "" : "s"} ago`;
}

async function call(method, url) {
  const response = await fetch(url, { method, credentials: "same-origin",
                                      headers: { Accept: "application/json" } });
  let body = {};
  try {
    body = await response.json();
  } catch {
    body = {};
  }
  if (!response.ok) throw new Error(body.message || `The server answered ${response.status}.`);
  return body;
}

function showError(message) {
  const box = $("projects-error");
  box.textContent = message || "";
  box.hidden = !message;
}

function renderAccount(me) {
  const status = $("account-status");
  const actions = $("account-actions");
  actions.replaceChildren();
  if (me.signed_in) {
    status.textContent = `Signed in as ${me.user.name}.`;
    status.classList.remove("muted");
    const form = element("form", { method: "post", action: "/auth/logout" },
      element("button", { class: "button small", type: "submit", text: "Sign out" }));
    actions.append(form);
  } else if (me.login_url) {
    status.textContent = "Sign in to keep your files between sessions. Without signing in, "
      + "a session's files are gone when it ends (download them first).";
    actions.append(element("a", { class: "button primary", id: "sign-in",
      href: `${me.login_url}?next=${encodeURIComponent("/projects")}`, text: "Sign in" }));
  } else {
    status.textContent = "This server has no sign-in: every session is anonymous and its "
      + "files are gone when it ends. Download your work before you leave.";
  }
}

function projectItem(project) {
  const title = element("h3", { text: project.name },
    element("span", { class: `state ${project.state}`, text: project.state }));
  const repo = project.repo_url.startsWith("http")
    ? element("a", { href: project.repo_url, rel: "noopener", text: project.repo_url })
    : document.createTextNode(project.repo_url);
  const meta = element("p", { class: "meta" }, repo);
  const details = element("p", { class: "meta",
    text: `Last used ${ago(project.last_used)} · ${size(project.size)}`
      + (project.updates ? " · the repository has changed since your copy" : "") });
  const about = element("div", {}, title, meta, details);

  const actions = element("div", { class: "actions" });
  const open = element("a", { class: "button small primary", href: project.open_url
    || project.launch_url, text: "Open", "aria-label": `Open ${project.name}` });
  actions.append(open);
  if (project.state !== "stopped") {
    const stop = element("button", { class: "button small", type: "button", text: "Stop",
      "aria-label": `Stop ${project.name}` });
    stop.addEventListener("click", async () => {
      stop.disabled = true;
      try {
        await call("POST", `/api/projects/${encodeURIComponent(project.name)}/stop`);
        showError("");
      } catch (error) {
        showError(error.message);
      }
      refresh();
    });
    actions.append(stop);
  }
  const remove = element("button", { class: "button small danger", type: "button",
    text: "Delete", "aria-label": `Delete ${project.name}` });
  actions.append(remove);

  const item = element("li", { class: "project", "data-project": project.name }, about, actions);
  remove.addEventListener("click", () => askToDelete(item, project));
  return item;
}

function askToDelete(item, project) {
  confirming = project.name;
  const yes = element("button", { class: "button small danger primary", type: "button",
    text: "Delete for good" });
  const no = element("button", { class: "button small", type: "button", text: "Keep it" });
  const box = element("p", { class: "confirm alert warning", role: "alertdialog",
    "aria-label": `Delete ${project.name}?` },
    element("span", { class: "alert-message",
      text: `Delete ${project.name} and all its files? This cannot be undone.` }),
    element("span", { class: "actions" }, yes, no));
  item.append(box);
  no.focus();
  no.addEventListener("click", () => {
    confirming = "";
    box.remove();
  });
  yes.addEventListener("click", async () => {
    yes.disabled = no.disabled = true;
    try {
      await call("DELETE", `/api/projects/${encodeURIComponent(project.name)}`);
      showError("");
    } catch (error) {
      showError(error.message);
    }
    confirming = "";
    refresh();
  });
}

function renderProjects(data) {
  $("projects-count").textContent = `${data.projects.length} of ${data.limit} projects`;
  $("projects-empty").hidden = data.projects.length > 0;
  $("project-list").replaceChildren(...data.projects.map(projectItem));
}

async function refresh() {
  clearTimeout(timer);
  if (!confirming) {
    try {
      renderProjects(await call("GET", "/api/projects"));
    } catch (error) {
      showError(error.message);
    }
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

async function start() {
  let me;
  try {
    me = await call("GET", "/api/me");
  } catch (error) {
    $("account-status").textContent = `Could not ask the server who you are: ${error.message}`;
    return;
  }
  renderAccount(me);
  if (me.signed_in && me.workspaces) {
    $("projects").hidden = false;
    refresh();
  } else if (me.signed_in) {
    $("account-status").textContent += " This server keeps no files between sessions.";
  }
}

start();
