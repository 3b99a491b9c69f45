// The home page: build a launch link and its badge from the form, copy them, launch.

import { badgeMarkdown, buildLaunchLink, parseRepoUrl, providerById } from "/assets/js/binder.js";

const $ = (id) => document.getElementById(id);

const el = {
  form: $("launch-form"),
  provider: $("provider"),
  repo: $("repo"),
  repoLabel: $("repo-label"),
  repoHelp: $("repo-help"),
  repoError: $("repo-error"),
  refField: $("ref-field"),
  ref: $("ref"),
  path: $("path"),
  pathHelp: $("path-help"),
  link: $("link"),
  badge: $("badge"),
  copyStatus: $("copy-status"),
};

const PATH_HELP = {
  file: "A file to open in JupyterLab, relative to the repository root.",
  url: "A URL path to open on the server, such as lab, tree/data or voila/render/app.ipynb.",
};
const PATH_PLACEHOLDER = { file: "index.ipynb", url: "lab" };
const EMPTY_LINK = "Fill in a repository to get its link.";

const origin = location.origin;

function pathKind() {
  const checked = el.form.querySelector('input[name="pathkind"]:checked');
  return checked ? checked.value : "file";
}

function currentLink() {
  return buildLaunchLink(origin, el.provider.value, el.repo.value, el.ref.value,
    el.path.value, pathKind());
}

/** Why the repository field cannot make a link, or "" when it can. */
function repoProblem() {
  const value = el.repo.value.trim();
  const provider = el.provider.value;
  if (!value) return "Enter a repository.";
  if ((provider === "gh" || provider === "gist")
      && !/^[^/\s]+\/[^/\s]+$/.test(value.replace(/^\/+|\/+$/g, "").replace(/\.git$/, ""))) {
    return provider === "gh"
      ? "A GitHub repository looks like org/repo."
      : "A gist looks like user/gist-id.";
  }
  return "";
}

function showProblem(message) {
  el.repoError.textContent = message;
  el.repoError.hidden = !message;
  if (message) el.repo.setAttribute("aria-invalid", "true");
  else el.repo.removeAttribute("aria-invalid");
}

function render() {
  const link = currentLink();
  const ok = Boolean(link);
  el.link.textContent = ok ? link : EMPTY_LINK;
  el.badge.textContent = badgeMarkdown(origin, ok ? link : `${origin}/v2/…`);
  el.link.classList.toggle("muted", !ok);
  el.badge.classList.toggle("muted", !ok);
  for (const button of el.form.querySelectorAll("[data-copy]")) button.disabled = !ok;
  if (el.repoError.textContent && !repoProblem()) showProblem("");
}

function updateProvider() {
  const provider = providerById(el.provider.value);
  el.repoLabel.textContent = provider.label;
  el.repo.placeholder = provider.placeholder;
  el.refField.hidden = !provider.ref;
  el.ref.disabled = !provider.ref;
  render();
}

function updatePathKind() {
  const kind = pathKind();
  el.pathHelp.textContent = PATH_HELP[kind];
  el.path.placeholder = PATH_PLACEHOLDER[kind];
  render();
}

/** Fill the form from a repository address; true when the text was one we understand. */
function applyRepoUrl(text) {
  const found = parseRepoUrl(text);
  if (!found) return false;
  el.provider.value = found.provider;
  el.repo.value = found.repo;
  if (found.ref) el.ref.value = found.ref;
  if (found.path) {
    el.path.value = found.path;
    el.form.querySelector("#kind-file").checked = true;
  }
  updateProvider();
  updatePathKind();
  return true;
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // fall through to the older way (denied permission, unfocused document)
    }
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

async function onCopy(button) {
  const source = $(button.dataset.copy);
  const ok = await copyText(source.textContent);
  const label = button.dataset.copy === "badge" ? "Badge" : "Link";
  button.textContent = ok ? "Copied" : "Copy failed";
  el.copyStatus.textContent = ok ? `${label} copied to the clipboard.`
    : `Could not copy. Select the ${label.toLowerCase()} and copy it by hand.`;
  clearTimeout(button._reset);
  button._reset = setTimeout(() => {
    button.textContent = "Copy";
  }, 2000);
}

function onSubmit(event) {
  event.preventDefault();
  applyRepoUrl(el.repo.value);
  const problem = repoProblem();
  if (problem) {
    showProblem(problem);
    el.repo.focus();
    return;
  }
  location.assign(currentLink());
}

function init() {
  el.provider.addEventListener("change", updateProvider);
  for (const radio of el.form.querySelectorAll('input[name="pathkind"]')) {
    radio.addEventListener("change", updatePathKind);
  }
  for (const input of [el.repo, el.ref, el.path]) input.addEventListener("input", render);
  // A pasted address fills the whole form; typed text is left alone until the field is left.
  el.repo.addEventListener("paste", (event) => {
    const text = event.clipboardData ? event.clipboardData.getData("text") : "";
    if (text && parseRepoUrl(text)) {
      event.preventDefault();
      applyRepoUrl(text);
    }
  });
  el.repo.addEventListener("change", () => applyRepoUrl(el.repo.value));
  for (const button of el.form.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", () => onCopy(button));
  }
  el.form.addEventListener("submit", onSubmit);
  updateProvider();
  updatePathKind();
}

init();
