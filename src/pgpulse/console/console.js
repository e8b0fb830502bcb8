// @ts-check
/**
 * The pgpulse console: one ES module, no build step, no dependency.
 *
 * It signs in with an admin token (from the link `pgpulse serve` prints, as
 * `#token=` so that it never reaches a server log, or pasted), keeps it in
 * this tab's sessionStorage only, and sends it in the Authorization header to
 * /api/admin, which answers for the whole cluster from PostgreSQL. To watch a
 * tenant it asks /api/admin/tokens for a short-lived token of that tenant and
 * opens /ws with it, resuming with last_event_id after any drop: the admin
 * token never travels on a tenant's socket. An operator's disconnect
 * (POST /api/admin/disconnect) closes that socket too when it names the
 * watched tenant: the page then stops and offers to watch again, rather than
 * reconnecting behind the operator's back. Every value from the server is
 * put on the page as text, never as HTML.
 */

const POLL_MS = 2000; // overview refresh; nodes beat every 2 s by default
const TENANTS_EVERY = 3; // refresh the tenant page every third poll
const TENANTS_PER_PAGE = 10;
const HISTORY_PER_PAGE = 10;
const STREAM_MAX = 300; // events kept on the page per watch
const CHART_SECONDS = 300; // the longest a chart shows: what the nodes keep
const CHART_MIN_SECONDS = 60; // the shortest: a young cluster's few samples still read as a line
const TOKEN_TTL = 900; // seconds asked of /api/admin/tokens
const TOKEN_MARGIN_MS = 60_000; // re-mint a tenant token this long before it expires
const BACKOFF_MS = [250, 500, 1000, 2000, 4000];
const JOB_POLL_MS = 1000;
const HISTORY_REFRESH_MS = 2000; // the newest history page follows live events at most this often
const STORAGE_KEY = "pgpulse.console.token";
const OPERATOR_CLOSE = "disconnected by the operator"; // the reason of close 1008 after a disconnect

const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const integerFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

// -- small helpers ----------------------------------------------------------

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
function $(id) {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`missing #${id}`);
  return element;
}

/**
 * An element with attributes and children (text for strings): never HTML.
 * @param {string} tag
 * @param {Record<string, string | number | boolean | null | undefined>} [attributes]
 * @param {...(Node | string | null | undefined)} children
 * @returns {HTMLElement}
 */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") element.className = String(value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    element.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return element;
}

/** @param {number | null | undefined} value */
function rate(value) {
  return value === null || value === undefined ? "–" : numberFormat.format(value);
}

/** @param {string | null | undefined} iso */
function ago(iso) {
  if (!iso) return "–";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

/** @param {string} iso */
function clock(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString();
}

/**
 * @param {string} text
 * @param {number} max
 */
function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** @param {string} value */
function commaList(value) {
  return value.split(",").map((part) => part.trim()).filter((part) => part !== "");
}

/**
 * Replace an element's children.
 * @param {Element} parent
 * @param {Node[]} children
 */
function fill(parent, children) {
  parent.replaceChildren(...children);
}

/**
 * @param {HTMLElement} output
 * @param {string} text
 * @param {"ok" | "error"} [state]
 */
function say(output, text, state = "ok") {
  output.textContent = text;
  output.dataset.state = state;
}

// -- the admin token and the API ---------------------------------------------

class HttpError extends Error {
  /**
   * @param {number} status
   * @param {string} message
   */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** @type {string | null} */
let adminToken = null;

/** Take `#token=` from the address (and drop it from there), else this tab's stored token. */
function readToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromLink = fragment.get("token");
  if (fromLink) {
    sessionStorage.setItem(STORAGE_KEY, fromLink);
    history.replaceState(null, "", location.pathname + location.search);
    return fromLink;
  }
  return sessionStorage.getItem(STORAGE_KEY);
}

/**
 * JSON from this server; errors carry the status and the server's one-line detail.
 * @param {string} path relative to the server's root (no leading slash)
 * @param {{ method?: string, body?: unknown, token?: string | null }} [options]
 * @returns {Promise<any>}
 */
async function call(path, options = {}) {
  const token = options.token === undefined ? adminToken : options.token;
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(new URL(path, serverRoot()), {
    method: options.method ?? "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    cache: "no-store",
  });
  const text = await response.text();
  /** @type {any} */
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
    throw new HttpError(response.status, detail);
  }
  return body;
}

/** The server's root: the console lives at <root>/console. */
function serverRoot() {
  return new URL(".", location.href).href;
}

// -- sign in and out ---------------------------------------------------------

/** @param {string} [message] */
function showLogin(message = "") {
  stopPolling();
  unwatch();
  cancelDisconnect();
  adminToken = null;
  sessionStorage.removeItem(STORAGE_KEY);
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  const status = $("cluster-status");
  status.textContent = "Not signed in";
  status.dataset.state = "idle";
  const input = /** @type {HTMLInputElement} */ ($("login-token"));
  input.value = "";
  input.focus();
}

/** @param {string} token */
async function signIn(token) {
  adminToken = token;
  try {
    const overview = await call("api/admin/overview");
    sessionStorage.setItem(STORAGE_KEY, token);
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    render(overview);
    startPolling();
    loadTenants();
  } catch (error) {
    if (error instanceof HttpError && (error.status === 401 || error.status === 403)) {
      showLogin(refusal(error));
    } else {
      showLogin(`Cannot reach the server: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
}

/** @param {HttpError} error */
function refusal(error) {
  return error.status === 403
    ? `Refused: ${error.message}.`
    : `Token refused: ${error.message}. Mint one with: pgpulse token --scope admin`;
}

// -- the overview, every POLL_MS ---------------------------------------------

/** @type {ReturnType<typeof setTimeout> | null} */
let pollTimer = null;
let polls = 0;

function startPolling() {
  stopPolling();
  const tick = async () => {
    if (!document.hidden) {
      try {
        render(await call("api/admin/overview"));
        polls += 1;
        if (polls % TENANTS_EVERY === 0) loadTenants();
      } catch (error) {
        if (error instanceof HttpError && (error.status === 401 || error.status === 403)) {
          showLogin(refusal(error));
          return;
        }
        const status = $("cluster-status");
        status.textContent = `Server unreachable: ${error instanceof Error ? error.message : String(error)}`;
        status.dataset.state = "error";
      }
    }
    pollTimer = setTimeout(tick, POLL_MS);
  };
  pollTimer = setTimeout(tick, POLL_MS);
}

function stopPolling() {
  if (pollTimer !== null) clearTimeout(pollTimer);
  pollTimer = null;
}

/**
 * @param {string} id
 * @param {string} value
 * @param {string} [sub]
 */
function card(id, value, sub) {
  const element = $(id);
  const valueElement = element.querySelector("[data-value]");
  if (valueElement) valueElement.textContent = value;
  const subElement = element.querySelector("[data-sub]");
  if (subElement && sub !== undefined) subElement.textContent = sub;
}

/** @param {any} overview */
function render(overview) {
  const totals = overview.totals;
  const nodes = /** @type {any[]} */ (overview.nodes);
  const servers = nodes.filter((node) => node.kind === "server");
  const workers = nodes.filter((node) => node.kind === "worker");
  const down = nodes.filter((node) => !node.up).length;
  const notReady = nodes.filter((node) => node.up && !node.ready).length;

  const status = $("cluster-status");
  const parts = [
    `${totals.servers_up} of ${servers.length} servers up`,
    `${totals.workers_up} of ${workers.length} job workers up`,
  ];
  if (notReady) parts.push(`${notReady} not ready`);
  status.textContent = parts.join(" · ");
  status.dataset.state = servers.length === 0 || totals.servers_up === 0 ? "error" : down || notReady ? "degraded" : "ok";

  card("card-nodes", `${totals.servers_up + totals.workers_up}`, down ? `${down} down` : "all up");
  const connections = totals.connections.ws + totals.connections.sse;
  card(
    "card-connections",
    integerFormat.format(connections),
    `${integerFormat.format(totals.connections.ws)} WebSocket · ${integerFormat.format(totals.connections.sse)} SSE · ${integerFormat.format(totals.tenants_connected)} tenants`,
  );
  card("card-events", rate(totals.events_per_s));
  card("card-deliveries", rate(totals.deliveries_per_s));
  card("card-p99", totals.p99_ms === null ? "–" : `${numberFormat.format(totals.p99_ms)} ms`);
  card("card-slow", integerFormat.format(totals.slow_consumer_closes));
  const jobs = overview.jobs;
  card(
    "card-jobs",
    `${jobs.running} running`,
    `${jobs.queued} queued${jobs.queued ? `, oldest ${numberFormat.format(jobs.oldest_queued_s)} s` : ""}`,
  );

  const series = /** @type {any[]} */ (overview.series);
  drawChart("chart-events", "Events per second", series.map((s) => [s.t, s.events_per_s]));
  drawChart("chart-deliveries", "Deliveries per second", series.map((s) => [s.t, s.deliveries_per_s]));
  renderNodes(nodes);
  renderJobs(jobs);
  renderTopTenants(overview.top_tenants);
}

/** @param {any[]} nodes */
function renderNodes(nodes) {
  const rows = nodes.map((node) => {
    const stats = node.stats ?? {};
    const listener = stats.listener ?? {};
    const state = node.up
      ? node.ready
        ? h("span", { class: "pill ok" }, "ready")
        : h("span", { class: "pill warn" }, "up, not ready")
      : h("span", { class: "pill bad" }, "down");
    const listenerText = `${listener.connected ? "listening" : "not listening"}${listener.reconnects ? ` · ${listener.reconnects} reconnects` : ""}`;
    const connections = stats.connections ? stats.connections.ws + stats.connections.sse : null;
    const detail =
      node.kind === "worker"
        ? `${stats.running ?? 0}/${stats.concurrency ?? "?"} running · ${stats.jobs_done ?? 0} done · ${(stats.kinds ?? []).join(", ")}`
        : `${stats.tenants_connected ?? 0} tenants · ${stats.slow_consumer_closes ?? 0} slow closes`;
    return h(
      "tr",
      {
        "data-node-id": node.id,
        "data-kind": node.kind,
        "data-up": String(node.up),
        "data-ready": String(node.ready),
      },
      h("td", { class: "id", title: `${node.host}, pid ${node.pid}` }, node.id),
      h("td", {}, node.kind === "server" ? "server" : "job worker"),
      h("td", {}, state, node.up ? null : ` (silent ${numberFormat.format(node.heartbeat_age_s)} s)`),
      h("td", {}, listenerText),
      h("td", { class: "num" }, connections === null ? "–" : integerFormat.format(connections)),
      h("td", { class: "num" }, node.kind === "server" ? rate(stats.deliveries_per_s) : "–"),
      h("td", { class: "num" }, stats.p99_ms === null || stats.p99_ms === undefined ? "–" : `${numberFormat.format(stats.p99_ms)} ms`),
      h("td", {}, detail),
      h("td", { title: node.started_at }, ago(node.started_at)),
    );
  });
  if (rows.length === 0) rows.push(h("tr", {}, h("td", { colspan: 9, class: "empty" }, "No node has registered yet.")));
  fill(/** @type {HTMLElement} */ ($("nodes").querySelector("tbody")), rows);
}

/**
 * @param {{ job_id: string, kind: string, tenant_id: string, user_id?: string | null, progress: number, status?: string, error?: string | null }} job
 * @param {string} state
 * @param {string} stateText
 */
function jobItem(job, state, stateText) {
  const progress = /** @type {HTMLProgressElement} */ (h("progress", { max: 1, "aria-label": `Progress of job ${job.job_id}` }));
  progress.value = state === "complete" ? 1 : job.progress;
  return h(
    "li",
    { "data-job-id": job.job_id, "data-state": state },
    h(
      "span",
      { class: "job-title", title: job.job_id },
      h("strong", {}, job.kind),
      ` · ${job.tenant_id}${job.user_id ? ` · ${job.user_id}` : ""} · ${job.job_id.slice(0, 8)}`,
    ),
    h("span", { class: "job-state" }, stateText),
    progress,
  );
}

/** @param {any} jobs */
function renderJobs(jobs) {
  $("jobs-summary").textContent =
    `${jobs.queued} queued${jobs.queued ? ` (oldest waiting ${numberFormat.format(jobs.oldest_queued_s)} s)` : ""} · ${jobs.running} running`;
  const running = /** @type {any[]} */ (jobs.running_jobs).map((job) =>
    jobItem(job, "running", `${Math.round(job.progress * 100)}%`),
  );
  if (running.length === 0) running.push(h("li", { class: "empty" }, "Nothing running."));
  fill($("running-jobs"), running);
  const recent = /** @type {any[]} */ (jobs.recent).map((job) =>
    jobItem(job, job.status === "succeeded" ? "complete" : "failed", job.status === "succeeded" ? "done" : "failed"),
  );
  if (recent.length === 0) recent.push(h("li", { class: "empty" }, "None."));
  fill($("recent-jobs"), recent);
}

/** @param {any[]} top */
function renderTopTenants(top) {
  fill(
    $("tenant-names"),
    top.map((tenant) => h("option", { value: tenant.tenant_id })),
  );
}

// -- charts: inline SVG -------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

/**
 * @param {string} tag
 * @param {Record<string, string | number>} attributes
 */
function svg(tag, attributes) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  return element;
}

/** A round upper bound for the y axis. @param {number} value */
function niceMax(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * magnitude) return step * magnitude;
  return 10 * magnitude;
}

/**
 * Draw the last CHART_SECONDS of `points` ([unix seconds, value | null]).
 * @param {string} figureId
 * @param {string} label
 * @param {Array<[number, number | null]>} points
 */
function drawChart(figureId, label, points) {
  const figure = $(figureId);
  const chart = /** @type {SVGSVGElement} */ (figure.querySelector("svg"));
  const caption = /** @type {HTMLElement} */ (figure.querySelector("[data-caption]"));
  const width = 600;
  const height = 160;
  const now = Date.now() / 1000;
  const recent = points.filter(([t, value]) => value !== null && t >= now - CHART_SECONDS);
  const span = Math.min(CHART_SECONDS, Math.max(CHART_MIN_SECONDS, recent.length ? now - recent[0][0] : 0));
  const spanText = span >= 90 ? `${Math.round(span / 60)} min` : `${Math.round(span)} s`;
  const values = recent.map(([, value]) => /** @type {number} */ (value));
  const peak = values.length ? Math.max(...values) : 0;
  const last = values.length ? values[values.length - 1] : null;
  const top = niceMax(peak);
  /** @param {number} t */
  const x = (t) => ((t - (now - span)) / span) * width;
  /** @param {number} v */
  const y = (v) => height - (v / top) * (height - 8);

  const children = [];
  for (const fraction of [0.25, 0.5, 0.75, 1]) {
    const gy = y(top * fraction);
    children.push(svg("line", { class: "grid", x1: 0, x2: width, y1: gy, y2: gy }));
  }
  if (recent.length > 1) {
    const line = recent.map(([t, v]) => `${x(t).toFixed(1)},${y(/** @type {number} */ (v)).toFixed(1)}`).join(" ");
    const first = x(recent[0][0]).toFixed(1);
    const end = x(recent[recent.length - 1][0]).toFixed(1);
    children.push(svg("polygon", { class: "area", points: `${first},${height} ${line} ${end},${height}` }));
    children.push(svg("polyline", { class: "line", points: line }));
  }
  chart.replaceChildren(...children);
  chart.dataset.peak = String(peak);
  chart.dataset.last = last === null ? "" : String(last);
  chart.dataset.samples = String(recent.length);
  const summary =
    last === null
      ? `${label}: no data yet`
      : `${label} over the last ${spanText}: now ${rate(last)}, peak ${rate(peak)}, scale 0 to ${rate(top)}`;
  chart.setAttribute("aria-label", summary);
  caption.textContent = last === null ? "Waiting for the first samples…" : `now ${rate(last)} · peak ${rate(peak)} · last ${spanText} · top of scale ${rate(top)}`;
}

// -- tenants: search, sort, pages ---------------------------------------------

const tenantView = { search: "", sort: "connections", page: 1, total: 0 };
let tenantsRequest = 0;

async function loadTenants() {
  const request = ++tenantsRequest;
  const query = new URLSearchParams({
    search: tenantView.search,
    sort: tenantView.sort,
    page: String(tenantView.page),
    per_page: String(TENANTS_PER_PAGE),
  });
  try {
    const body = await call(`api/admin/tenants?${query}`);
    if (request !== tenantsRequest) return; // an answer to an older search
    tenantView.total = body.total;
    const pages = Math.max(1, Math.ceil(body.total / TENANTS_PER_PAGE));
    if (tenantView.page > pages) {
      tenantView.page = pages;
      loadTenants();
      return;
    }
    const rows = /** @type {any[]} */ (body.tenants).map((tenant) =>
      h(
        "tr",
        { "data-tenant": tenant.tenant_id, "data-ws": tenant.ws, "data-sse": tenant.sse },
        h("td", { class: "id" }, tenant.tenant_id),
        h("td", { class: "num" }, integerFormat.format(tenant.ws)),
        h("td", { class: "num" }, integerFormat.format(tenant.sse)),
        h("td", { class: "num" }, tenant.last_event_id === null ? "–" : String(tenant.last_event_id)),
        h("td", {}, watchButton(tenant.tenant_id)),
      ),
    );
    if (rows.length === 0) rows.push(h("tr", {}, h("td", { colspan: 5, class: "empty" }, tenantView.search ? "No tenant matches." : "No tenants yet.")));
    fill(/** @type {HTMLElement} */ ($("tenants").querySelector("tbody")), rows);
    $("tenants-page").textContent = `Page ${tenantView.page} of ${pages} · ${integerFormat.format(body.total)} tenants`;
    /** @type {HTMLButtonElement} */ ($("tenants-prev")).disabled = tenantView.page <= 1;
    /** @type {HTMLButtonElement} */ ($("tenants-next")).disabled = tenantView.page >= pages;
  } catch (error) {
    if (request === tenantsRequest) $("tenants-page").textContent = `Cannot list tenants: ${error instanceof Error ? error.message : String(error)}`;
  }
}

/** @param {string} tenantId */
function watchButton(tenantId) {
  const button = h("button", { type: "button", class: "small", "aria-label": `Watch tenant ${tenantId}` }, "Watch");
  button.addEventListener("click", () => {
    /** @type {HTMLInputElement} */ ($("watch-tenant")).value = tenantId;
    /** @type {HTMLInputElement} */ ($("watch-user")).value = "";
    /** @type {HTMLInputElement} */ ($("watch-topics")).value = "";
    watch({ tenant: tenantId, user: null, topics: [] });
    $("workspace").scrollIntoView({ behavior: "smooth", block: "start" });
  });
  return button;
}

// -- watching a tenant: /ws with a minted token, exact resume -----------------

/**
 * @typedef {{ tenant: string, user: string | null, topics: string[] }} Target
 * @typedef {{ target: Target, token: string | null, expires: number, socket: WebSocket | null,
 *   lastId: number | null, attempt: number, timer: ReturnType<typeof setTimeout> | null, stopped: boolean,
 *   halted: boolean }} Watch
 */

/** @type {Watch | null} */
let current = null;

/**
 * @param {string} state
 * @param {string} text
 */
function streamStatus(state, text) {
  const status = $("stream-status");
  status.dataset.state = state;
  status.textContent = text;
}

/** A token of the watched tenant, minted again when it nears its end. @param {Watch} w */
async function tenantToken(w) {
  if (w.token === null || Date.now() > w.expires - TOKEN_MARGIN_MS) {
    const minted = await call("api/admin/tokens", {
      method: "POST",
      body: {
        tenant_id: w.target.tenant,
        user_id: w.target.user,
        topics: w.target.topics.length ? w.target.topics : null,
        ttl: TOKEN_TTL,
      },
    });
    w.token = minted.token;
    w.expires = Date.now() + minted.expires_in * 1000;
  }
  return /** @type {string} */ (w.token);
}

/** @param {Target} target */
function watch(target) {
  unwatch();
  /** @type {Watch} */
  const w = { target, token: null, expires: 0, socket: null, lastId: null, attempt: 0, timer: null, stopped: false, halted: false };
  current = w;
  $("stream").replaceChildren();
  fill($("my-jobs"), []);
  myJobs.clear();
  /** @type {HTMLButtonElement} */ ($("watch-stop")).disabled = false;
  history_.before = null;
  loadHistory();
  connect(w);
}

function unwatch() {
  const w = current;
  current = null;
  $("watch-resume").hidden = true;
  /** @type {HTMLButtonElement | null} */ (document.getElementById("watch-stop"))?.setAttribute("disabled", "");
  if (w === null) return;
  w.stopped = true;
  if (w.timer !== null) clearTimeout(w.timer);
  w.socket?.close(1000, "console stopped watching");
  for (const job of myJobs.values()) if (job.timer !== null) clearTimeout(job.timer);
  streamStatus("idle", "Not watching.");
}

/** @param {Watch} w */
function describe(w) {
  const { tenant, user, topics } = w.target;
  return `${tenant}${user ? ` as ${user}` : ""}${topics.length ? ` · topics ${topics.join(", ")}` : ""}`;
}

/** @param {Watch} w */
async function connect(w) {
  if (w.stopped) return;
  streamStatus(w.attempt ? "reconnecting" : "connecting", `${w.attempt ? "Reconnecting to" : "Connecting to"} ${describe(w)}…`);
  let token;
  try {
    token = await tenantToken(w);
  } catch (error) {
    if (error instanceof HttpError && error.status === 409) {
      streamStatus("error", `This server cannot mint tenant tokens: ${error.message}`);
      return;
    }
    if (error instanceof HttpError && (error.status === 401 || error.status === 403)) {
      showLogin(refusal(error));
      return;
    }
    retry(w, error instanceof Error ? error.message : String(error));
    return;
  }
  if (w.stopped) return;
  const url = new URL("ws", serverRoot());
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", token);
  if (w.target.topics.length) url.searchParams.set("topics", w.target.topics.join(","));
  if (w.lastId !== null) url.searchParams.set("last_event_id", String(w.lastId));
  const socket = new WebSocket(url);
  w.socket = socket;
  socket.addEventListener("message", (message) => {
    if (w.stopped || typeof message.data !== "string") return;
    /** @type {any} */
    let frame;
    try {
      frame = JSON.parse(message.data);
    } catch {
      return;
    }
    if (typeof frame.id === "number") {
      if (w.lastId !== null && frame.id <= w.lastId) return; // the server never resends; belt and braces
      w.lastId = frame.id;
      showEvent(frame);
      trackJob(frame);
      refreshHistorySoon();
      streamStatus("live", `Live: ${describe(w)} · last id ${w.lastId}`);
    } else if (frame.op === "ready") {
      w.attempt = 0;
      w.lastId = Math.max(w.lastId ?? 0, frame.last_event_id);
      streamStatus("live", `Live: ${describe(w)} · last id ${w.lastId}`);
    } else if (frame.op === "reset") {
      showNotice(`The resume point is gone (${frame.reason}): events before this line may be missing.`);
    }
  });
  socket.addEventListener("close", (event) => {
    if (w.stopped || w.socket !== socket) return;
    if (event.code === 1008) w.token = null; // refused or expired: mint a new one
    if (event.code === 1008 && event.reason === OPERATOR_CLOSE) halt(w);
    else retry(w, event.reason || `closed with ${event.code}`);
  });
}

/**
 * An operator disconnected the watched tenant (or its user): stay disconnected
 * until asked to watch again, which resumes after the last event shown.
 * @param {Watch} w
 */
function halt(w) {
  w.halted = true;
  w.socket = null;
  const from = w.lastId ? ` after id ${w.lastId}` : "";
  streamStatus("halted", `Disconnected by the operator: ${describe(w)}. Watch again to resume${from}.`);
  showNotice(`Disconnected by the operator${from}.`);
  $("watch-resume").hidden = false;
}

function resume() {
  const w = current;
  if (w === null || !w.halted) return;
  w.halted = false;
  w.attempt = 0;
  $("watch-resume").hidden = true;
  connect(w);
}

/**
 * @param {Watch} w
 * @param {string} why
 */
function retry(w, why) {
  if (w.stopped) return;
  const delay = BACKOFF_MS[Math.min(w.attempt, BACKOFF_MS.length - 1)];
  w.attempt += 1;
  streamStatus("reconnecting", `Disconnected (${why}); resuming after id ${w.lastId ?? "–"} in ${delay / 1000} s…`);
  w.timer = setTimeout(() => connect(w), delay);
}

/** @param {any} frame */
function showEvent(frame) {
  const stream = $("stream");
  const item = h(
    "li",
    { class: "fresh", "data-event-id": frame.id, "data-type": frame.type, "data-topic": frame.topic },
    h(
      "div",
      { class: "meta" },
      h("strong", {}, `#${frame.id}`),
      h("span", {}, frame.topic),
      h("span", {}, frame.type),
      frame.user_id ? h("span", {}, `user ${frame.user_id}`) : null,
      h("span", {}, clock(frame.ts)),
    ),
    h("div", { class: "payload" }, clip(JSON.stringify(frame.data), 400)),
  );
  stream.prepend(item);
  while (stream.childElementCount > STREAM_MAX) stream.lastElementChild?.remove();
}

/** @param {string} text */
function showNotice(text) {
  $("stream").prepend(h("li", { class: "notice" }, text));
}

// -- publishing and jobs, with the watched tenant's token ----------------------

/** @param {SubmitEvent} event */
async function publish(event) {
  event.preventDefault();
  const output = $("publish-result");
  const w = current;
  if (w === null) {
    say(output, "Watch a tenant first: events are published for the tenant being watched.", "error");
    return;
  }
  const form = /** @type {HTMLFormElement} */ (event.currentTarget);
  const data = new FormData(form);
  try {
    const token = await tenantToken(w);
    if (data.get("what") === "notification") {
      const body = await call("api/notifications", { method: "POST", token, body: { message: String(data.get("message") ?? "") } });
      say(output, `Published notification ${body.id} as event ${body.event_id}.`);
    } else {
      let payload;
      try {
        payload = JSON.parse(String(data.get("data") ?? ""));
      } catch (error) {
        say(output, `Data is not valid JSON: ${error instanceof Error ? error.message : String(error)}`, "error");
        return;
      }
      /** @type {Record<string, unknown>} */
      const body = { topic: String(data.get("topic") ?? ""), type: String(data.get("type") ?? ""), data: payload };
      if (w.target.user) body.user_id = w.target.user;
      const answer = await call("api/events", { method: "POST", token, body });
      say(output, `Published event ${answer.event_id}.`);
    }
  } catch (error) {
    say(output, `Not published: ${error instanceof Error ? error.message : String(error)}`, "error");
  }
}

/**
 * @typedef {{ job_id: string, kind: string, tenant_id: string, user_id: string | null, progress: number,
 *   state: "queued" | "running" | "complete" | "failed", message: string, timer: ReturnType<typeof setTimeout> | null }} MyJob
 */

/** @type {Map<string, MyJob>} */
const myJobs = new Map();

/** @param {SubmitEvent} event */
async function submitJob(event) {
  event.preventDefault();
  const output = $("job-result");
  const w = current;
  if (w === null) {
    say(output, "Watch a tenant first: the job runs for the tenant being watched.", "error");
    return;
  }
  const data = new FormData(/** @type {HTMLFormElement} */ (event.currentTarget));
  let input;
  try {
    input = JSON.parse(String(data.get("input") ?? "{}") || "{}");
  } catch (error) {
    say(output, `Input is not valid JSON: ${error instanceof Error ? error.message : String(error)}`, "error");
    return;
  }
  try {
    const token = await tenantToken(w);
    const kind = String(data.get("kind") ?? "");
    const body = await call("api/jobs", { method: "POST", token, body: { kind, input } });
    say(output, `Submitted job ${body.job_id}.`);
    /** @type {MyJob} */
    const job = { job_id: body.job_id, kind, tenant_id: w.target.tenant, user_id: w.target.user, progress: 0, state: "queued", message: "", timer: null };
    myJobs.set(job.job_id, job);
    renderMyJobs();
    pollJob(w, job);
  } catch (error) {
    say(output, `Not submitted: ${error instanceof Error ? error.message : String(error)}`, "error");
  }
}

/** Job events from the stream move the bars at once. @param {any} frame */
function trackJob(frame) {
  if (frame.topic !== "ai_jobs" || !frame.data || typeof frame.data.job_id !== "string") return;
  const job = myJobs.get(frame.data.job_id);
  if (job === undefined || ended(job)) return;
  if (frame.type === "ai_job.started") job.state = "running";
  else if (frame.type === "ai_job.progress") {
    job.state = "running";
    job.progress = Math.max(job.progress, Number(frame.data.progress) || 0);
    job.message = typeof frame.data.message === "string" ? frame.data.message : "";
  } else if (frame.type === "ai_job_complete") {
    job.state = "complete";
    job.progress = 1;
  } else if (frame.type === "ai_job.failed") {
    job.state = "failed";
    job.message = String(frame.data.error ?? "");
  }
  renderMyJobs();
}

/**
 * The job's state from GET /api/jobs too: its events may be outside the watched topics.
 * @param {Watch} w
 * @param {MyJob} job
 */
function pollJob(w, job) {
  job.timer = setTimeout(async () => {
    if (w.stopped || ended(job)) return;
    try {
      const state = await call(`api/jobs/${encodeURIComponent(job.job_id)}`, { token: await tenantToken(w) });
      if (!ended(job)) {
        job.progress = Math.max(job.progress, state.progress);
        if (state.status === "succeeded") {
          job.state = "complete";
          job.progress = 1;
        } else if (state.status === "failed") {
          job.state = "failed";
          job.message = state.error ?? "";
        } else if (state.status === "running") job.state = "running";
        renderMyJobs();
      }
    } catch {
      // The stream may still tell; try again.
    }
    pollJob(w, job);
  }, JOB_POLL_MS);
}

/** @param {MyJob} job */
function ended(job) {
  return job.state === "complete" || job.state === "failed";
}

function renderMyJobs() {
  const items = [...myJobs.values()].reverse().map((job) => {
    const text =
      job.state === "complete" ? "done" : job.state === "failed" ? `failed${job.message ? `: ${clip(job.message, 80)}` : ""}` : job.state === "queued" ? "queued" : `${Math.round(job.progress * 100)}%${job.message ? ` · ${job.message}` : ""}`;
    return jobItem(job, job.state, text);
  });
  fill($("my-jobs"), items);
}

// -- disconnecting a tenant or one of its users ---------------------------------

/** @typedef {{ tenant: string, user: string | null }} Disconnect */

/** @type {Disconnect | null} */
let pendingDisconnect = null;

/** "user ann of tenant acme" or "every user of tenant acme". @param {Disconnect} target */
function whom(target) {
  return target.user ? `user ${target.user} of tenant ${target.tenant}` : `every user of tenant ${target.tenant}`;
}

/** Ask first: the tenant and user are those of the watch form. */
function askDisconnect() {
  const tenant = /** @type {HTMLInputElement} */ ($("watch-tenant")).value.trim();
  const user = /** @type {HTMLInputElement} */ ($("watch-user")).value.trim();
  if (!tenant) {
    say($("disconnect-result"), "Give the tenant to disconnect (and a user, to disconnect only that user).", "error");
    $("watch-tenant").focus();
    return;
  }
  pendingDisconnect = { tenant, user: user || null };
  $("disconnect-question").textContent =
    `Disconnect ${whom(pendingDisconnect)} on every node? Their clients may connect again with a valid token.`;
  $("disconnect-result").textContent = "";
  $("disconnect-confirm").hidden = false;
  $("disconnect-yes").focus();
}

/** @param {boolean} [refocus] */
function cancelDisconnect(refocus = false) {
  const wasOpen = pendingDisconnect !== null;
  pendingDisconnect = null;
  $("disconnect-confirm").hidden = true;
  if (refocus && wasOpen) $("disconnect").focus();
}

async function confirmDisconnect() {
  const target = pendingDisconnect;
  cancelDisconnect(true);
  if (target === null) return;
  const output = $("disconnect-result");
  try {
    const body = await call("api/admin/disconnect", { method: "POST", body: { tenant_id: target.tenant, user_id: target.user } });
    const sent = { tenant: body.tenant_id, user: body.user_id };
    const w = current;
    const mine = w !== null && w.target.tenant === sent.tenant && (sent.user === null || sent.user === w.target.user);
    say(output, `Disconnect sent to ${whom(sent)}.${mine ? " This page's own watch of the tenant is closed too." : ""}`);
  } catch (error) {
    if (error instanceof HttpError && (error.status === 401 || error.status === 403)) {
      showLogin(refusal(error));
      return;
    }
    say(output, `Not disconnected: ${error instanceof Error ? error.message : String(error)}`, "error");
  }
}

// -- retained history, paged ----------------------------------------------------

/** Where the history view is: `before` of the shown page (null: the newest), and of the next. */
const history_ = { before: /** @type {number | null} */ (null), next: /** @type {number | null} */ (null) };

/** @type {ReturnType<typeof setTimeout> | null} */
let historyTimer = null;

/** New events show on the newest page of history too, without a reload per event. */
function refreshHistorySoon() {
  if (history_.before !== null || historyTimer !== null) return;
  historyTimer = setTimeout(() => {
    historyTimer = null;
    if (history_.before === null) loadHistory();
  }, HISTORY_REFRESH_MS);
}

async function loadHistory() {
  const w = current;
  const tbody = /** @type {HTMLElement} */ ($("history").querySelector("tbody"));
  if (w === null) {
    fill(tbody, [h("tr", {}, h("td", { colspan: 6, class: "empty" }, "Watch a tenant to see its history."))]);
    return;
  }
  const query = new URLSearchParams({ tenant: w.target.tenant, limit: String(HISTORY_PER_PAGE) });
  if (w.target.user) query.set("user", w.target.user);
  if (w.target.topics.length === 1) query.set("topic", w.target.topics[0]);
  if (history_.before !== null) query.set("before", String(history_.before));
  try {
    const body = await call(`api/admin/history?${query}`);
    if (current !== w) return;
    history_.next = body.next_before;
    const rows = /** @type {any[]} */ (body.events).map((frame) =>
      h(
        "tr",
        { "data-event-id": frame.id },
        h("td", { class: "num" }, String(frame.id)),
        h("td", { title: frame.ts }, clock(frame.ts)),
        h("td", {}, frame.topic),
        h("td", {}, frame.type),
        h("td", {}, frame.user_id ?? ""),
        h("td", { class: "data" }, clip(JSON.stringify(frame.data), 300)),
      ),
    );
    if (rows.length === 0) rows.push(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No retained events.")));
    fill(tbody, rows);
    const first = body.events[0]?.id;
    const last = body.events[body.events.length - 1]?.id;
    $("history-page").textContent = body.events.length ? `Ids ${first} to ${last}${history_.next === null ? " · the oldest retained" : ""}` : "";
    /** @type {HTMLButtonElement} */ ($("history-older")).disabled = history_.next === null;
    /** @type {HTMLButtonElement} */ ($("history-newest")).disabled = history_.before === null;
  } catch (error) {
    $("history-page").textContent = `Cannot read history: ${error instanceof Error ? error.message : String(error)}`;
  }
}

// -- wiring -----------------------------------------------------------------------

function wire() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = /** @type {HTMLInputElement} */ ($("login-token")).value.trim();
    if (value) signIn(value);
  });
  $("logout").addEventListener("click", () => showLogin("Signed out."));

  let searchTimer = /** @type {ReturnType<typeof setTimeout> | null} */ (null);
  const search = /** @type {HTMLInputElement} */ ($("tenant-query"));
  search.addEventListener("input", () => {
    if (searchTimer !== null) clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      tenantView.search = search.value.trim();
      tenantView.page = 1;
      loadTenants();
    }, 250);
  });
  $("tenant-search").addEventListener("submit", (event) => {
    event.preventDefault();
    tenantView.search = search.value.trim();
    tenantView.page = 1;
    loadTenants();
  });
  $("tenant-sort").addEventListener("change", (event) => {
    tenantView.sort = /** @type {HTMLSelectElement} */ (event.target).value;
    tenantView.page = 1;
    loadTenants();
  });
  $("tenants-prev").addEventListener("click", () => {
    tenantView.page = Math.max(1, tenantView.page - 1);
    loadTenants();
  });
  $("tenants-next").addEventListener("click", () => {
    tenantView.page += 1;
    loadTenants();
  });

  $("watch-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(/** @type {HTMLFormElement} */ (event.currentTarget));
    const tenant = String(data.get("tenant") ?? "").trim();
    if (!tenant) return;
    const user = String(data.get("user") ?? "").trim();
    watch({ tenant, user: user || null, topics: commaList(String(data.get("topics") ?? "")) });
  });
  $("watch-stop").addEventListener("click", () => unwatch());
  $("watch-resume").addEventListener("click", resume);
  $("disconnect").addEventListener("click", askDisconnect);
  $("disconnect-yes").addEventListener("click", confirmDisconnect);
  $("disconnect-no").addEventListener("click", () => cancelDisconnect(true));
  $("disconnect-confirm").addEventListener("keydown", (event) => {
    if (event.key === "Escape") cancelDisconnect(true);
  });
  // The question names a tenant and a user: another one typed since withdraws it.
  $("watch-form").addEventListener("input", () => cancelDisconnect());

  const publishForm = /** @type {HTMLFormElement} */ ($("publish-form"));
  publishForm.addEventListener("submit", publish);
  publishForm.addEventListener("change", () => {
    const what = new FormData(publishForm).get("what");
    for (const element of publishForm.querySelectorAll("[data-for]")) {
      /** @type {HTMLElement} */ (element).hidden = /** @type {HTMLElement} */ (element).dataset.for !== what;
    }
  });
  $("job-form").addEventListener("submit", submitJob);

  $("history-older").addEventListener("click", () => {
    if (history_.next === null) return;
    history_.before = history_.next;
    loadHistory();
  });
  $("history-newest").addEventListener("click", () => {
    history_.before = null;
    loadHistory();
  });

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && adminToken !== null) loadTenants();
  });
}

wire();
loadHistory();
const saved = readToken();
if (saved) signIn(saved);
else showLogin();
