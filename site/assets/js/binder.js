// Binder launch links, shared by the home page and the loading page.
// Pure functions only: no DOM, no network, so they read the same in every browser.

/** Providers this page knows how to write links for, in the order the home page lists them.
 *  `encode`: the repository part is one encodeURIComponent-ed segment (BinderHub's urlEncode).
 *  `ref`: the spec ends in /<ref>. `thebe`: thebe's and MyST's name for the provider, for
 *  the providers they can launch. */
export const PROVIDERS = [
  { id: "gh", name: "GitHub", label: "GitHub repository", placeholder: "org/repo or https://github.com/org/repo", ref: true, encode: false, thebe: "github" },
  { id: "git", name: "Git repository", label: "Git repository URL", placeholder: "https://example.org/org/repo.git", ref: true, encode: true, thebe: "git" },
  { id: "gl", name: "GitLab", label: "GitLab project", placeholder: "group/project or https://gitlab.com/group/project", ref: true, encode: true, thebe: "gitlab" },
  { id: "gist", name: "Gist", label: "Gist", placeholder: "user/gist-id", ref: true, encode: false, thebe: "gist" },
  { id: "zenodo", name: "Zenodo", label: "Zenodo DOI", placeholder: "10.5281/zenodo.1234567", ref: false, encode: false },
  { id: "figshare", name: "Figshare", label: "Figshare DOI", placeholder: "10.6084/m9.figshare.1234567.v1", ref: false, encode: false },
  { id: "hydroshare", name: "HydroShare", label: "HydroShare resource", placeholder: "resource id or URL", ref: false, encode: false },
  { id: "dataverse", name: "Dataverse", label: "Dataverse DOI", placeholder: "10.7910/DVN/ABCDEF", ref: false, encode: false },
  { id: "doi", name: "DOI", label: "DOI", placeholder: "10.1234/example", ref: false, encode: false },
  { id: "ckan", name: "CKAN", label: "CKAN dataset URL", placeholder: "https://demo.ckan.org/dataset/name", ref: false, encode: true },
  { id: "codecommit", name: "AWS CodeCommit", label: "CodeCommit repository", placeholder: "region/repository", ref: true, encode: false },
];

export const PHASES = ["waiting", "fetching", "building", "pushing", "built", "launching", "ready"];

// A build log's own step count: Docker's classic builder prints "Step 12/51 : RUN …",
// BuildKit (docker buildx, which repo2docker uses) "#14 [stage-0 12/51] RUN …".
const CLASSIC_STEP_RE = /\bStep\s+(\d+)\s*\/\s*(\d+)/;
const BUILDKIT_STEP_RE = /#\d+\s+\[(?:[\w.-]+\s+)?\s*(\d+)\/(\d+)\]/;

/** The step count a build log line gives, as {n, m}, or null. */
export function buildStep(line) {
  const match = CLASSIC_STEP_RE.exec(line) || BUILDKIT_STEP_RE.exec(line);
  if (!match) return null;
  const n = Number(match[1]);
  const m = Number(match[2]);
  return m > 0 && n <= m ? { n, m } : null;
}

export function providerById(id) {
  return PROVIDERS.find((p) => p.id === id);
}

function safeDecode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text; // a malformed %-sequence: show it as it came
  }
}

/** Split `/v2/<provider>/<spec...>` into its parts, keeping the spec exactly as encoded
 *  (a `%2F` inside it is part of a GitLab namespace or a git URL and must stay).
 *  Returns null when the path is no launch link. */
export function parseLaunchPath(pathname) {
  const match = /^\/v2\/([^/]+)\/(.+?)\/*$/.exec(pathname);
  if (!match) return null;
  return { provider: match[1], spec: match[2] };
}

/** The path to open in the session, by BinderHub's precedence:
 *  labpath=P -> doc/tree/P, else filepath=P -> tree/P, else urlpath minus one leading "/". */
export function pathToOpen(search) {
  const params = new URLSearchParams(search);
  const labpath = params.get("labpath");
  if (labpath) return "doc/tree/" + labpath.replace(/^\/+/, "");
  const filepath = params.get("filepath");
  if (filepath) return "tree/" + filepath.replace(/^\/+/, "");
  const urlpath = params.get("urlpath") || "";
  return urlpath.startsWith("/") ? urlpath.slice(1) : urlpath;
}

/** Where the browser goes once the session is ready: the path resolved inside the session
 *  URL, with the session token added. Only a place inside the session can come out: a path
 *  that would leave it (`javascript:`, another host, `//host`, `\\host`, `..` above the
 *  session, the same with tabs, newlines or %-encoding) opens the session's root instead.
 *  The server's `redirects.session_url` keeps the same rule. */
export function sessionUrl(ready, urlpath) {
  const root = new URL(ready.url);
  // Read the path as the browser would: it drops tabs and newlines and takes "\\" for "/".
  const cleaned = String(urlpath || "").replace(/[\u0000-\u0020\u007f]/g, "")
    .replace(/\\/g, "/").replace(/^\/+/, "");
  let url = cleaned ? new URL("./" + cleaned, root) : new URL(root.href);
  const segments = url.pathname.split("/").map(safeDecode);
  if (url.origin !== root.origin || !url.pathname.startsWith(root.pathname) ||
      segments.includes("..") || segments.includes(".")) {
    url = new URL(root.href);
  }
  url.searchParams.set("token", ready.token || "");
  return url.href;
}

/** A spec split into the repository, as a person writes it, and its ref ("" for archives).
 *  Accepts the encoded forms BinderHub writes and the ones Jupyter Book and MyST write
 *  (`git/https%3A//host/org/repo/main`, `gl/group/sub/project/main`). */
export function splitSpec(provider, spec) {
  const parts = spec.split("/");
  const rest = (from) => safeDecode(parts.slice(from).join("/"));
  if (provider === "gh" || provider === "gist" || provider === "codecommit") {
    return { repo: parts.slice(0, 2).map(safeDecode).join("/"), ref: rest(2) };
  }
  if (provider === "gl" || provider === "git") {
    const first = safeDecode(parts[0]);
    // MyST's unencoded namespace (gl/group/sub/project/ref) or Jupyter Book's URL that kept
    // its slashes (git/https%3A//host/org/repo/ref): the ref is the last segment.
    const unencoded = provider === "gl" ? !/%2F/i.test(parts[0]) : /^[a-z][a-z0-9+.-]*:$/i.test(first);
    if (unencoded && parts.length > 2) {
      return { repo: safeDecode(parts.slice(0, -1).join("/")), ref: safeDecode(parts.at(-1)) };
    }
    return { repo: first, ref: rest(1) };
  }
  return { repo: safeDecode(spec), ref: "" };
}

/** A short, human name for what is being launched: "org/repo", "group/project", ... */
export function shortName(provider, spec) {
  const { repo } = splitSpec(provider, spec);
  if (provider === "git") {
    const url = repo.replace(/\/+$/, "").replace(/\.git$/, "");
    const path = url.replace(/^[a-z][a-z0-9+.-]*:\/*/i, "").split("/").filter(Boolean);
    return path.slice(-2).join("/") || url;
  }
  return repo;
}

/** The ref part of a spec, for providers whose specs end in one ("" otherwise). */
export function specRef(provider, spec) {
  return splitSpec(provider, spec).ref;
}

/** Encode a ref for a link: each segment escaped, the slashes of `feature/x` kept. */
function encodeRef(ref) {
  return ref.split("/").map(encodeURIComponent).join("/");
}

/** Encode a path for a query value, keeping "/" readable. */
function encodeQueryPath(path) {
  return encodeURIComponent(path).replace(/%2F/gi, "/");
}

function cleanRepo(providerId, repo) {
  let name = repo.trim();
  if (providerId === "gh" || providerId === "gl" || providerId === "gist") {
    name = name.replace(/^\/+|\/+$/g, "").replace(/\.git$/, "");
  }
  return name;
}

function cleanRef(ref) {
  return (ref || "").trim().replace(/^\/+|\/+$/g, "") || "HEAD";
}

/** The spec part of a launch link (after `/v2/`), or "" when the repository is empty. */
export function buildSpec(providerId, repo, ref) {
  const provider = providerById(providerId);
  const name = cleanRepo(providerId, repo);
  if (!provider || !name) return "";
  // A record given by its URL (HydroShare, a DOI resolver) is one encoded segment, as
  // BinderHub writes it: its slashes would read as part of the spec.
  const encode = provider.encode || (!provider.ref && name.includes("://"));
  const target = encode ? encodeURIComponent(name) : name;
  if (!provider.ref) return `${providerId}/${target}`;
  return `${providerId}/${target}/${encodeRef(cleanRef(ref))}`;
}

/** A full launch link. `pathKind` is "file" (labpath) or "url" (urlpath). */
export function buildLaunchLink(origin, providerId, repo, ref, path, pathKind) {
  const spec = buildSpec(providerId, repo, ref);
  if (!spec) return "";
  let link = `${origin}/v2/${spec}`;
  const cleanPath = (path || "").trim();
  if (cleanPath) {
    const key = pathKind === "url" ? "urlpath" : "labpath";
    const value = pathKind === "url" ? cleanPath : cleanPath.replace(/^\/+/, "");
    link += `?${key}=${encodeQueryPath(value)}`;
  }
  return link;
}

export function badgeMarkdown(origin, link) {
  return `[![Binder](${origin}/badge_logo.svg)](${link})`;
}

export function badgeRst(origin, link) {
  return `.. image:: ${origin}/badge_logo.svg\n   :target: ${link}\n   :alt: Binder`;
}

function escapeHtml(text) {
  return text.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function badgeHtml(origin, link) {
  return `<a href="${escapeHtml(link)}"><img src="${escapeHtml(origin)}/badge_logo.svg" alt="Launch Binder"></a>`;
}

/** A YAML scalar: plain when it is safe, double-quoted otherwise. */
function yamlValue(text) {
  return /^[A-Za-z0-9_./-]+$/.test(text) && !/^[-.]/.test(text) ? text : JSON.stringify(text);
}

/** What thebe and MyST need to launch a repository here, or null for the providers they
 *  cannot launch (the archives: Zenodo, Figshare, ...). */
export function thebeTarget(origin, providerId, repo, ref) {
  const provider = providerById(providerId);
  const name = cleanRepo(providerId, repo);
  if (!provider || !provider.thebe || !name) return null;
  return { binderUrl: origin, repoProvider: provider.thebe, repo: name, ref: cleanRef(ref) };
}

/** MyST's project or page frontmatter (`jupyter.binder`), which powers its launch button
 *  and its live code cells. */
export function mystFrontmatter(target) {
  if (!target) return "";
  return [
    "jupyter:",
    "  binder:",
    `    url: ${yamlValue(target.binderUrl + "/")}`,
    `    repo: ${yamlValue(target.repo)}`,
    `    ref: ${yamlValue(target.ref)}`,
    `    provider: ${target.repoProvider}`,
  ].join("\n");
}

/** A thebe configuration block for a page's <head>. thebe 0.9 reads the kernel's name from
 *  `kernelName`, thebe 0.8 from `name`: the block sets both. */
export function thebeConfig(target) {
  if (!target) return "";
  const config = {
    requestKernel: true,
    binderOptions: {
      binderUrl: target.binderUrl,
      repoProvider: target.repoProvider,
      repo: target.repo,
      ref: target.ref,
    },
    kernelOptions: { kernelName: "python3", name: "python3" },
  };
  // A "</" inside the JSON would end the <script> element early.
  const json = JSON.stringify(config, null, 2).replace(/<\//g, "<\\/");
  return `<script type="text/x-thebe-config">\n${json}\n</script>`;
}
