// The countdown banner binderless adds to JupyterLab's pages (see server/session_tools.py).
// It asks /user/<id>/.binderless/status how long the session has before it is stopped for
// idleness or age; shortly before, it says so, offers "Keep me running" (idleness only),
// and for anonymous sessions "Download your work". Polling it never counts as activity.
(() => {
  const script = document.currentScript;
  const session = script && script.dataset.binderlessSession;
  if (!session || document.getElementById("binderless-banner")) return;
  const base = `/user/${session}/.binderless/`;
  const POLL_MS = 15000;
  const CLOSE_POLL_MS = 3000;

  let status = null;
  let fetchedAt = 0;
  let stopped = false;
  let pollTimer = 0;
  // Changes kept after the session ends (server: restore.py): null until asked, then
  // {saves, restore_days, restores: [...]}.
  let kept = null;

  const bar = document.createElement("div");
  bar.id = "binderless-banner";
  bar.setAttribute("role", "status");
  bar.setAttribute("aria-live", "polite");
  // Inline styles beat the page's CSS (JupyterLab's) and the browser's own [hidden] rule
  // alike, so visibility is set here, in one place (show), never through `hidden`.
  bar.style.cssText = [
    "position:fixed", "z-index:2147483647", "left:50%", "bottom:12px",
    "transform:translateX(-50%)", "max-width:min(44rem,calc(100vw - 24px))",
    "display:none", "flex-wrap:wrap", "align-items:center", "gap:8px 12px",
    "padding:10px 14px", "border-radius:10px", "border:1px solid #f0cf8a",
    "background:#fff7e6", "color:#3b2a00", "box-shadow:0 4px 16px rgb(16 22 28 / 20%)",
    "font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif",
  ].join(";");
  const text = document.createElement("span");
  text.id = "binderless-banner-text";
  const keep = button("Keep me running", "binderless-keep");
  const download = document.createElement("a");
  download.id = "binderless-download";
  download.textContent = "Download your work";
  download.setAttribute("download", "");
  styleButton(download, false);
  const projects = document.createElement("a");
  projects.textContent = "Your projects";
  projects.href = "/projects";
  projects.target = "_blank";
  styleButton(projects, false);
  const restore = document.createElement("a");
  restore.id = "binderless-restore";
  restore.textContent = "Start again with your changes";
  styleButton(restore, true);
  // A link that lets another browser start again with these changes (POST .../share).
  const share = button("Share these changes", "binderless-share");
  styleButton(share, false);
  const shared = document.createElement("input");
  shared.id = "binderless-share-link";
  shared.readOnly = true;
  shared.setAttribute("aria-label", "Share link");
  shared.style.cssText = "font:inherit;min-width:16rem;flex:1;padding:3px 6px";
  let sharedLink = "";
  let shareProblem = "";
  bar.append(text, keep, download, projects, restore, share, shared);

  /** Show or hide the bar, and each of its parts ([node, visible] pairs). */
  function show(visible, ...parts) {
    bar.style.display = visible ? "flex" : "none";
    for (const [node, on] of parts) node.style.display = on ? "" : "none";
  }

  function button(label, id) {
    const node = document.createElement("button");
    node.type = "button";
    node.id = id;
    node.textContent = label;
    styleButton(node, true);
    return node;
  }

  function styleButton(node, primary) {
    node.style.cssText = [
      "font:inherit", "font-weight:600", "cursor:pointer", "padding:4px 10px",
      "border-radius:6px", "text-decoration:none", "border:1px solid #0b6e80",
      primary ? "background:#0b6e80;color:#fff" : "background:#fff;color:#085866",
    ].join(";");
  }

  function clock(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const m = Math.floor(s / 60);
    return `${m}:${String(s % 60).padStart(2, "0")}`;
  }

  function render() {
    if (!status) return;
    if (stopped) {
      const saved = !status.signed_in && kept && kept.restores && kept.restores[0];
      if (saved) restore.href = saved.link;
      show(true, [keep, false], [download, false], [projects, status.signed_in],
        [restore, Boolean(saved)], [share, Boolean(saved) && !sharedLink],
        [shared, Boolean(saved) && Boolean(sharedLink)]);
      text.textContent = status.persistent
        ? "This session has stopped. Your files are kept: open the repository's link again, "
          + "or your projects page, to carry on."
        : saved && shareProblem ? shareProblem
        : saved && sharedLink ? "Anyone with this link can start a session with your changes "
          + `until ${new Date(saved.expires_at * 1000).toLocaleString()}:`
        : saved ? "This session has stopped. The files you created or changed are kept for "
          + "this browser." : "This session has stopped.";
      return;
    }
    const elapsed = (Date.now() - fetchedAt) / 1000;
    const idle = status.idle_seconds_left - elapsed;
    const age = status.age_seconds_left - elapsed;
    const left = Math.min(idle, age);
    if (left > status.warning_seconds) {
      show(false);
      return;
    }
    const byAge = age <= idle;
    let message = byAge
      ? `This session reaches its time limit in ${clock(left)}.`
      : `This session stops in ${clock(left)} if it stays idle.`;
    if (left <= 0) message = "This session may stop at any moment.";
    const days = kept && kept.saves && kept.restore_days;
    message += status.persistent
      ? ` Your files are kept in your project “${status.project}”.`
      : days ? ` The files you create or change will be kept for this browser for ${days} `
        + `day${days === 1 ? "" : "s"}: open its link again to start again with your changes.`
      : " Its files will be gone then.";
    text.textContent = message;
    download.href = status.download_url;
    show(true, [keep, !byAge], [download, !status.persistent], [projects, status.signed_in],
      [restore, false], [share, false], [shared, false]);
  }

  /** What the server keeps of this session once it ends, for this browser. */
  async function askKept() {
    try {
      const response = await fetch(`/api/restores?session=${encodeURIComponent(session)}`,
        { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) kept = await response.json();
    } catch {
      // Not kept, as far as this page can tell.
    }
  }

  async function poll(method = "GET", action = "status") {
    clearTimeout(pollTimer);
    try {
      const response = await fetch(base + action, { method, credentials: "same-origin",
                                                    headers: { Accept: "application/json" } });
      if (response.ok) {
        status = await response.json();
        fetchedAt = Date.now();
        stopped = !status.running;
      } else if (response.status === 404 || response.status === 502) {
        stopped = status !== null;
      }
    } catch {
      // The network blinked; the next poll tells.
    }
    if (stopped && status && !status.signed_in) {
      await askKept();
      // The copy is made as the session stops, a moment after its address goes: ask again.
      if (!(kept && kept.restores && kept.restores.length)) {
        setTimeout(() => askKept().then(render), CLOSE_POLL_MS);
      }
    }
    render();
    if (!stopped) {
      const close = status && Math.min(status.idle_seconds_left, status.age_seconds_left)
        <= status.warning_seconds + POLL_MS / 1000;
      pollTimer = setTimeout(poll, close ? CLOSE_POLL_MS : POLL_MS);
    }
  }

  share.addEventListener("click", async () => {
    const saved = kept && kept.restores && kept.restores[0];
    if (!saved) return;
    share.disabled = true;
    try {
      const response = await fetch(`/api/restores/${encodeURIComponent(saved.restore_id)}/share`,
        { method: "POST", credentials: "same-origin", headers: { Accept: "application/json" } });
      const data = await response.json().catch(() => ({}));
      if (response.ok && data.link) {
        sharedLink = shared.value = data.link;
        shareProblem = "";
        render();
        shared.focus();
        shared.select();
        navigator.clipboard?.writeText(data.link).catch(() => {});
      } else {
        shareProblem = data.message || "These changes could not be shared.";
      }
    } catch {
      shareProblem = "The server did not answer; try again.";
    }
    share.disabled = false;
    render();
  });

  keep.addEventListener("click", async () => {
    keep.disabled = true;
    await poll("POST", "keepalive");
    keep.disabled = false;
  });

  function mount() {
    document.body.append(bar);
    askKept().then(() => poll());
    setInterval(render, 1000);
  }

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
