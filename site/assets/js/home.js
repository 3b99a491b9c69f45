// The home page: build a launch link, its badges and embeds from the form, copy them, launch.

import {
  badgeHtml, badgeMarkdown, badgeRst, buildLaunchLink, mystFrontmatter, parseRepoUrl,
  providerById, thebeConfig, thebeTarget,
} from "/assets/js/binder.js";

const $ = (id) => document.getElementById(id);

const el = {
  form: $("launch-form"),
  provider: $("provider"),
  repo: $("repo"),
  repoLabel: $("repo-label"),
  repoError: $("repo-error"),
  fillStatus: $("fill-status"),
  refField: $("ref-field"),
  ref: $("ref"),
  path: $("path"),
  pathHelp: $("path-help"),
  link: $("link"),
  badgeLink: $("badge-preview-link"),
  md: $("snippet-md"),
  rst: $("snippet-rst"),
  html: $("snippet-html"),
  myst: $("snippet-myst"),
  thebe: $("snippet-thebe"),
  thebeNote: $("thebe-note"),
  copyStatus: $("copy-status"),
};

const PATH_HELP = {
  file: "A file to open in JupyterLab, relative to the repository root.",
  url: "A URL path to open on the server, such as lab, tree/data or voila/render/app.ipynb.",
};
const PATH_PLACEHOLDER = { file: "index.ipynb", url: "lab" };
const EMPTY_LINK = "Fill in a repository to get its link.";
const NO_THEBE = "(thebe and MyST cannot launch this source: use the badge)";

const origin = location.origin;

function pathKind() {
  const checked = el.form.querySelector('input[name="pathkind"]:checked');
  return checked ? checked.value : "file";
}

function setPathKind(kind) {
  el.form.querySelector(kind === "url" ? "#kind-url" : "#kind-file").checked = true;
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
  const shown = ok ? link : `${origin}/v2/…`;
  el.link.textContent = ok ? link : EMPTY_LINK;
  el.link.classList.toggle("muted", !ok);
  el.badgeLink.href = ok ? link : "#main";
  el.md.textContent = badgeMarkdown(origin, shown);
  el.rst.textContent = badgeRst(origin, shown);
  el.html.textContent = badgeHtml(origin, shown);
  const target = thebeTarget(origin, el.provider.value, el.repo.value, el.ref.value);
  el.myst.textContent = target ? mystFrontmatter(target) : NO_THEBE;
  el.thebe.textContent = target ? thebeConfig(target) : NO_THEBE;
  el.thebeNote.hidden = Boolean(target) || !ok;
  for (const code of [el.md, el.rst, el.html]) code.classList.toggle("muted", !ok);
  for (const code of [el.myst, el.thebe]) code.classList.toggle("muted", !ok || !target);
  for (const button of document.querySelectorAll("[data-copy]")) {
    const needsThebe = button.dataset.copy === "snippet-myst" || button.dataset.copy === "snippet-thebe";
    button.disabled = !ok || (needsThebe && !target);
  }
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

/** Fill the form from an address; true when the text was one we understand. A paste
 *  replaces the whole form; an address typed in keeps the ref and path it does not name. */
function applyRepoUrl(text, { replace = false } = {}) {
  const found = parseRepoUrl(text);
  if (!found) return false;
  el.provider.value = found.provider;
  el.repo.value = found.repo;
  if (found.ref || replace) el.ref.value = found.ref || "HEAD";
  if (found.path || replace) {
    el.path.value = found.path || "";
    setPathKind(found.pathKind || "file");
  }
  updateProvider();
  updatePathKind();
  const known = providerById(found.provider);
  el.fillStatus.textContent = `Filled in from the address: ${known.name}, ${found.repo}`
    + (known.ref ? `, ref ${el.ref.value}` : "") + (found.path ? `, path ${found.path}` : "") + ".";
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
  const what = button.dataset.what || "Text";
  button.textContent = ok ? "Copied" : "Copy failed";
  el.copyStatus.textContent = ok ? `${what} copied to the clipboard.`
    : `Could not copy. Select the ${what.toLowerCase()} and copy it by hand.`;
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
      applyRepoUrl(text, { replace: true });
    }
  });
  el.repo.addEventListener("change", () => applyRepoUrl(el.repo.value));
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", () => onCopy(button));
  }
  el.form.addEventListener("submit", onSubmit);
  updateProvider();
  updatePathKind();
}

init();
