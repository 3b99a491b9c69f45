// Binder launch links, shared by the home page and the loading page.
// Pure functions only: no DOM, no network, so they read the same in every browser.

/** Providers this page knows how to write links for, in the order the home page lists them.
 *  `encode`: the repository part is one encodeURIComponent-ed segment (BinderHub's urlEncode).
 *  `ref`: the spec ends in /<ref>. */
export const PROVIDERS = [
  { id: "gh", name: "GitHub", label: "GitHub repository", placeholder: "org/repo or https://github.com/org/repo", ref: true, encode: false },
  { id: "git", name: "Git repository", label: "Git repository URL", placeholder: "https://example.org/org/repo.git", ref: true, encode: true },
  { id: "gl", name: "GitLab", label: "GitLab project", placeholder: "group/project or https://gitlab.com/group/project", ref: true, encode: true },
  { id: "gist", name: "Gist", label: "Gist", placeholder: "user/gist-id", ref: true, encode: false },
  { id: "zenodo", name: "Zenodo", label: "Zenodo DOI", placeholder: "10.5281/zenodo.1234567", ref: false, encode: false },
  { id: "figshare", name: "Figshare", label: "Figshare DOI", placeholder: "10.6084/m9.figshare.1234567.v1", ref: false, encode: false },
  { id: "hydroshare", name: "HydroShare", label: "HydroShare resource", placeholder: "resource id or URL", ref: false, encode: false },
  { id: "dataverse", name: "Dataverse", label: "Dataverse DOI", placeholder: "10.7910/DVN/ABCDEF", ref: false, encode: false },
  { id: "doi", name: "DOI", label: "DOI", placeholder: "10.1234/example", ref: false, encode: false },
];

export const PHASES = ["waiting", "fetching", "building", "pushing", "built", "launching", "ready"];

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

/** Where the browser goes once the session is ready: the path resolved against the
 *  session URL, with the session token added. */
export function sessionUrl(ready, urlpath) {
  const url = urlpath ? new URL(urlpath, ready.url) : new URL(ready.url);
  url.searchParams.set("token", ready.token || "");
  return url.href;
}

/** A short, human name for what is being launched: "org/repo", "group/project", ... */
export function shortName(provider, spec) {
  const parts = spec.split("/");
  if (provider === "gh" || provider === "gist") return parts.slice(0, 2).map(safeDecode).join("/");
  if (provider === "gl") return safeDecode(parts[0]);
  if (provider === "git") {
    const url = safeDecode(parts[0]).replace(/\/+$/, "").replace(/\.git$/, "");
    const path = url.replace(/^[a-z][a-z0-9+.-]*:\/*/i, "").split("/").filter(Boolean);
    return path.slice(-2).join("/") || url;
  }
  return safeDecode(spec);
}

/** The ref part of a spec, for providers whose specs end in one ("" otherwise). */
export function specRef(provider, spec) {
  const parts = spec.split("/");
  if (provider === "gh") return safeDecode(parts.slice(2).join("/"));
  if (provider === "gl" || provider === "git") return safeDecode(parts.slice(1).join("/"));
  if (provider === "gist") return safeDecode(parts.slice(2).join("/"));
  return "";
}

/** Encode a ref for a link: each segment escaped, the slashes of `feature/x` kept. */
function encodeRef(ref) {
  return ref.split("/").map(encodeURIComponent).join("/");
}

/** Encode a path for a query value, keeping "/" readable. */
function encodeQueryPath(path) {
  return encodeURIComponent(path).replace(/%2F/gi, "/");
}

/** The spec part of a launch link (after `/v2/`), or "" when the repository is empty. */
export function buildSpec(providerId, repo, ref) {
  const provider = providerById(providerId);
  let name = repo.trim();
  if (!provider || !name) return "";
  if (providerId === "gh" || providerId === "gl" || providerId === "gist") {
    name = name.replace(/^\/+|\/+$/g, "").replace(/\.git$/, "");
  }
  const target = provider.encode ? encodeURIComponent(name) : name;
  if (!provider.ref) return `${providerId}/${target}`;
  const cleanRef = (ref || "").trim().replace(/^\/+|\/+$/g, "") || "HEAD";
  return `${providerId}/${target}/${encodeRef(cleanRef)}`;
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

/** Recognise a pasted repository URL and say what it means:
 *  {provider, repo, ref?, path?} or null when it is not a URL we understand. */
export function parseRepoUrl(text) {
  let url;
  try {
    url = new URL(text.trim());
  } catch {
    return null;
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return null;
  const host = url.hostname.toLowerCase().replace(/^www\./, "");
  const parts = url.pathname.split("/").filter(Boolean).map(safeDecode);
  if (host === "github.com" && parts.length >= 2) {
    const result = { provider: "gh", repo: `${parts[0]}/${parts[1].replace(/\.git$/, "")}` };
    if ((parts[2] === "tree" || parts[2] === "blob") && parts[3]) {
      result.ref = parts[3];
      if (parts[2] === "blob" && parts.length > 4) result.path = parts.slice(4).join("/");
    } else if (parts[2] === "commit" && parts[3]) {
      result.ref = parts[3];
    }
    return result;
  }
  if (host === "gist.github.com" && parts.length >= 2) {
    return { provider: "gist", repo: `${parts[0]}/${parts[1]}` };
  }
  if (host === "gitlab.com" && parts.length >= 2) {
    const dash = parts.indexOf("-");
    const project = (dash === -1 ? parts : parts.slice(0, dash)).join("/").replace(/\.git$/, "");
    const result = { provider: "gl", repo: project };
    if (dash !== -1 && (parts[dash + 1] === "tree" || parts[dash + 1] === "blob") && parts[dash + 2]) {
      result.ref = parts[dash + 2];
    }
    return result;
  }
  if (host === "doi.org" && parts.length >= 2) {
    return { provider: "doi", repo: parts.join("/") };
  }
  if (host === "zenodo.org" && parts[0] === "records" && parts[1]) {
    return { provider: "zenodo", repo: `10.5281/zenodo.${parts[1]}` };
  }
  if (host === "hydroshare.org" && /^[0-9a-f]{32}$/.test(parts[1] || "")) {
    return { provider: "hydroshare", repo: parts[1] };
  }
  return null;
}
