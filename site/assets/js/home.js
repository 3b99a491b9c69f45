// The home page: build a launch link, its badges and embeds from the form, copy them, launch.

import {
  badgeHtml, badgeMarkdown, badgeRst, buildLaunchLink, mystFrontmatter, providerById,
  thebeConfig, thebeTarget,
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
  prebuildActions: $("snippet-prebuild-actions"),
  prebuildWebhook: $("snippet-prebuild-webhook"),
  prebuildJobName: $("prebuild-job-name"),
  prebuildJobWhere: $("prebuild-job-where"),
  prebuildJobCopy: $("prebuild-job-copy"),
  prebuildWebhookWhere: $("prebuild-webhook-where"),
  copyStatus: $("copy-status"),
};

const PATH_HELP = {
  file: "A file to open in JupyterLab, relative to the repository root.",
  url: "A URL path to open on the server, such as lab, tree/data or voila/render/app.ipynb.",
};
const PATH_PLACEHOLDER = { file: "index.ipynb", url: "lab" };
const EMPTY_LINK = "Fill in a repository to get its link.";
const READING = "Reading the address…";
// Text in the repository field that is an address to read (a link, a URL, git@, a folder,
// <provider>/<spec>) rather than the repository itself. The server reads it with the one
// parser `binderless launch` and `binderless resolve` use (GET /api/resolve).
const ADDRESS_RE = new RegExp("://|^git@|^ssh:|^[/~.]|^(?:v2/)?(?:gh|gist|gl|git|codecommit|zenodo|"
  + "figshare|hydroshare|dataverse|ckan|doi)/|^doi:|^(?:www\\.)?(?:gist\\.)?git(?:hub|lab)\\.com/", "i");
const BARE_DOI_RE = /^10\.\d{4,9}\//;
const TYPING_PAUSE_MS = 350;
const NO_THEBE = "(thebe and MyST cannot launch this source: use the badge)";

const origin = location.origin;

/** What the server said about the address in the field: `text` read, `answer` (the
 *  resolve document) or `problem` (its message), `pending` while it is asked. */
const lookup = { text: "", answer: null, problem: "", pending: null, applied: "", timer: 0 };

function pathKind() {
  const checked = el.form.querySelector('input[name="pathkind"]:checked');
  return checked ? checked.value : "file";
}

function setPathKind(kind) {
  el.form.querySelector(kind === "url" ? "#kind-url" : "#kind-file").checked = true;
}

/** Whether the field holds an address for the server to read (see ADDRESS_RE). A DOI in
 *  the field of a record provider (Zenodo, Figshare, ...) is that provider's repository. */
function isAddress(text) {
  const value = text.trim();
  if (!value || value === lookup.applied) return false;
  const provider = providerById(el.provider.value);
  if (BARE_DOI_RE.test(value)) return Boolean(provider && provider.ref);
  return ADDRESS_RE.test(value);
}

/** An address whose refusal is worth showing: a URL, git@ or a folder. A refused
 *  `gh/...` typed in a field is taken as the repository's own name. */
function surelyAddress(text) {
  const value = text.trim();
  return /:\/\/|^git@|^ssh:|^[/~.]|^[a-z0-9]+\/\//i.test(value) || value.split("/").length > 3;
}

function currentLink() {
  if (isAddress(el.repo.value)) return "";
  return buildLaunchLink(origin, el.provider.value, el.repo.value, el.ref.value,
    el.path.value, pathKind());
}

/** Ask the server what `text` launches; resolves to the lookup, cached for the same text. */
function readAddress(text) {
  if (lookup.text === text && (lookup.answer || lookup.problem || lookup.pending)) {
    return lookup.pending || Promise.resolve(lookup);
  }
  lookup.text = text;
  lookup.answer = null;
  lookup.problem = "";
  const url = `/api/resolve?offline=true&link=${encodeURIComponent(text)}`;
  lookup.pending = fetch(url, { headers: { Accept: "application/json" } })
    .then(async (response) => {
      const data = await response.json().catch(() => ({}));
      if (lookup.text !== text) return lookup;
      if (response.ok && data.provider) lookup.answer = data;
      else lookup.problem = data.message || `The server could not read this address (status ${response.status}).`;
      return lookup;
    })
    .catch(() => {
      if (lookup.text === text) lookup.problem = "The server did not answer: is it running?";
      return lookup;
    })
    .finally(() => {
      if (lookup.text === text) lookup.pending = null;
    });
  return lookup.pending;
}

/** Fill the form from what the address in the field was read as; true when it was read. */
async function settleAddress({ replace = false } = {}) {
  const text = el.repo.value.trim();
  if (!isAddress(text)) return true;
  const result = await readAddress(text);
  if (el.repo.value.trim() !== text) return false;  // typed on meanwhile
  if (result.answer) return applyAnswer(result.answer, { replace });
  if (surelyAddress(text)) {
    showProblem(result.problem);
  } else {
    lookup.applied = text;  // a name such as "git/x" is the repository's own
  }
  render();
  return false;
}

function scheduleRead() {
  clearTimeout(lookup.timer);
  if (isAddress(el.repo.value)) {
    lookup.timer = setTimeout(() => settleAddress(), TYPING_PAUSE_MS);
  }
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

// Prebuild on push (POST /api/prebuild, docs/publishers.md): git repositories only.
const PREBUILD_PROVIDERS = new Set(["gh", "gl", "git"]);
const NO_PREBUILD = "(prebuilds are for GitHub, GitLab and git repositories)";
const SECRET = "BINDERLESS_WEBHOOK_SECRET";
/** The CI job each provider gets: its name and where it goes. */
const PREBUILD_CI = {
  gh: ["GitHub Actions workflow", ".github/workflows/binderless-prebuild.yml; the secret in "
    + `the repository's Actions secrets as ${SECRET}`],
  gl: ["GitLab CI job", `.gitlab-ci.yml; the secret as a masked CI/CD variable ${SECRET}`],
  git: ["A CI job's command", `any CI system; the secret in its secrets as ${SECRET}`],
};

/** `<provider>/<repository>` of a launch link, still encoded, without its ref (the CI job
 *  names the commit it built: the pushed one). */
function repositoryPart(link, provider) {
  const parts = new URL(link).pathname.replace(/^\/v2\//, "").split("/");
  return parts.slice(0, provider === "gh" ? 3 : 2).join("/");
}

/** The CI job that asks this server to build the environment of each pushed commit. */
function prebuildJob(server, provider, link) {
  const repository = repositoryPart(link, provider);
  const post = `curl --fail-with-body -sS -X POST ${server}/api/prebuild`;
  const headers = [`-H "Authorization: Bearer $${SECRET}"`,
    "-H \"Content-Type: application/json\""];
  if (provider === "gh") {
    return [
      "name: Prebuild the Binder environment",
      "\"on\":",
      "  push:",
      "jobs:",
      "  prebuild:",
      "    runs-on: ubuntu-latest",
      "    steps:",
      "      - name: Ask binderless to build the environment of this commit",
      "        env:",
      `          ${SECRET}: \${{ secrets.${SECRET} }}`,
      "        run: >-",
      `          ${post}`,
      ...headers.map((h) => `          ${h}`),
      `          -d '{"link": "${repository}/\${{ github.sha }}"}'`,
    ].join("\n");
  }
  if (provider === "gl") {
    return [
      "binderless-prebuild:",
      "  image:",
      "    name: curlimages/curl:latest",
      "    entrypoint: [\"\"]",
      "  rules:",
      "    - if: $CI_PIPELINE_SOURCE == \"push\"",
      "  script:",
      "    - >-",
      `      printf '{"link": "%s"}' "${repository}/$CI_COMMIT_SHA"`,
      `      | ${post}`,
      ...headers.map((h) => `      ${h}`),
      "      --data-binary @-",
    ].join("\n");
  }
  return [`printf '{"link": "%s"}' "${repository.replace(/'/g, "%27")}/$(git rev-parse HEAD)" |`,
    `  ${post} \\`, ...headers.map((h) => `  ${h} \\`), "  --data-binary @-"].join("\n");
}

/** What to type into the repository host's webhook form. */
function webhookSettings(server, provider) {
  const github = [`Payload URL:   ${server}/api/prebuild`,
    "Content type:  application/json",
    "Secret:        this server's webhook secret",
    "Events:        Just the push event"];
  const gitlab = [`URL:           ${server}/api/prebuild`,
    "Secret token:  this server's webhook secret",
    "Trigger:       Push events (and Tag push events, if you like)"];
  if (provider === "gh") return github.join("\n");
  if (provider === "gl") return gitlab.join("\n");
  return ["On GitHub (Settings, Webhooks):", ...github, "",
    "On GitLab (Settings, Webhooks):", ...gitlab].join("\n");
}

/** Put the CI job's name and place in its heading and copy button. */
function labelPrebuildJob(provider) {
  const [name, where] = PREBUILD_CI[provider] || PREBUILD_CI.gh;
  el.prebuildJobName.textContent = name;
  el.prebuildJobWhere.textContent = where;
  el.prebuildJobCopy.dataset.what = name;
  el.prebuildJobCopy.setAttribute("aria-label", `Copy the ${name}`);
  el.prebuildWebhookWhere.textContent = provider === "gl"
    ? "the project's Settings, Webhooks" : "the repository's Settings, Webhooks";
}

function render() {
  const link = currentLink();
  const ok = Boolean(link);
  const shown = ok ? link : `${origin}/v2/…`;
  const reading = isAddress(el.repo.value) && !el.repoError.textContent;
  el.link.textContent = ok ? link : reading ? READING : EMPTY_LINK;
  el.link.classList.toggle("muted", !ok);
  el.badgeLink.href = ok ? link : "#main";
  el.md.textContent = badgeMarkdown(origin, shown);
  el.rst.textContent = badgeRst(origin, shown);
  el.html.textContent = badgeHtml(origin, shown);
  const target = thebeTarget(origin, el.provider.value, el.repo.value, el.ref.value);
  el.myst.textContent = target ? mystFrontmatter(target) : NO_THEBE;
  el.thebe.textContent = target ? thebeConfig(target) : NO_THEBE;
  el.thebeNote.hidden = Boolean(target) || !ok;
  const prebuilds = ok && PREBUILD_PROVIDERS.has(el.provider.value);
  labelPrebuildJob(el.provider.value);
  el.prebuildActions.textContent = prebuilds ? prebuildJob(origin, el.provider.value, link)
    : NO_PREBUILD;
  el.prebuildWebhook.textContent = prebuilds ? webhookSettings(origin, el.provider.value)
    : NO_PREBUILD;
  for (const code of [el.md, el.rst, el.html]) code.classList.toggle("muted", !ok);
  for (const code of [el.myst, el.thebe]) code.classList.toggle("muted", !ok || !target);
  for (const code of [el.prebuildActions, el.prebuildWebhook]) {
    code.classList.toggle("muted", !prebuilds);
  }
  for (const button of document.querySelectorAll("[data-copy]")) {
    const needsThebe = button.dataset.copy === "snippet-myst" || button.dataset.copy === "snippet-thebe";
    const needsPrebuild = button.dataset.copy.startsWith("snippet-prebuild");
    button.disabled = !ok || (needsThebe && !target) || (needsPrebuild && !prebuilds);
  }
  if (el.repoError.textContent && !repoProblem() && !surelyAddress(el.repo.value)) showProblem("");
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

/** Fill the form from the server's reading of an address. A paste replaces the whole
 *  form; an address typed in keeps the ref and path it does not name. */
function applyAnswer(answer, { replace = false } = {}) {
  const known = providerById(answer.provider);
  if (!known) {
    showProblem(`This page writes no links for ${answer.provider}: use ${origin}${answer.launch_path}`);
    return false;
  }
  el.provider.value = answer.provider;
  el.repo.value = answer.repo;
  lookup.applied = answer.repo;
  // HEAD is what an address that names no ref gets: a typed one keeps the ref set here.
  if ((answer.ref && answer.ref !== "HEAD") || replace) el.ref.value = answer.ref || "HEAD";
  if (answer.path || replace) {
    el.path.value = answer.path || "";
    setPathKind(answer.path_kind || "file");
  }
  showProblem("");
  updateProvider();
  updatePathKind();
  el.fillStatus.textContent = `Filled in from the address: ${known.name}, ${answer.repo}`
    + (known.ref ? `, ref ${el.ref.value}` : "") + (answer.path ? `, path ${answer.path}` : "") + ".";
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

async function onSubmit(event) {
  event.preventDefault();
  clearTimeout(lookup.timer);
  await settleAddress();
  const problem = el.repoError.textContent || repoProblem();
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
  for (const input of [el.ref, el.path]) input.addEventListener("input", render);
  // Typed text is read once typing pauses; a pasted address at once, and it fills the
  // whole form.
  el.repo.addEventListener("input", () => {
    lookup.applied = "";
    if (el.repoError.textContent) showProblem("");
    render();
    scheduleRead();
  });
  el.repo.addEventListener("paste", (event) => {
    const text = event.clipboardData ? event.clipboardData.getData("text").trim() : "";
    lookup.applied = "";
    if (!isAddress(text)) return;
    event.preventDefault();
    el.repo.value = text;
    showProblem("");
    render();
    clearTimeout(lookup.timer);
    settleAddress({ replace: true });
  });
  el.repo.addEventListener("change", () => settleAddress());
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", () => onCopy(button));
  }
  el.form.addEventListener("submit", onSubmit);
  updateProvider();
  updatePathKind();
}

init();
