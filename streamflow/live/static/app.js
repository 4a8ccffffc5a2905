// StreamFlow live view. Every piece of stream data is inserted as text (textContent), never
// as HTML: payloads come from producers we do not control.
"use strict";

const FEED_KEPT = 200;   // newest events kept by the page for the paused and filtered feed
const FEED_SHOWN = 50;   // of which at most this many are listed
const stateEl = document.getElementById("state");
let socket = null, retry = 500, socketOpen = false, chart = null;

function setState(state, text) {
  if (stateEl.dataset.state === state && stateEl.textContent === text) return;
  stateEl.className = "state " + state;
  stateEl.dataset.state = state;
  stateEl.textContent = text;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function clock(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString();
}

function inspect(payload) {
  let text = payload;
  try { text = JSON.stringify(JSON.parse(payload), null, 2); } catch (e) { /* not JSON */ }
  document.getElementById("inspector").textContent = text;
}

function parsed(payload) {
  try { const value = JSON.parse(payload); return value && typeof value === "object" ? value : {}; }
  catch (e) { return {}; }
}

// -- Kafka state ------------------------------------------------------------------------------
function renderKafka(kafka) {
  const banner = document.getElementById("kafka-banner");
  const down = kafka && kafka.reachable === false;
  banner.hidden = !down;
  if (down) {
    banner.textContent = "Kafka unreachable since " + clock(kafka.since) + " (" + kafka.detail +
      "): the rates and feeds below stop until it answers again.";
    setState("kafka-down", "Kafka unreachable");
  } else if (socketOpen) {
    setState("open", "live");
  }
}

// -- topics, chart, windows -----------------------------------------------------------------
function renderTopics(topics) {
  const box = document.getElementById("topics");
  box.replaceChildren(...Object.entries(topics).map(([name, t]) => {
    const card = el("div", undefined, "card");
    card.dataset.topic = name;
    card.append(el("div", name, "name"), el("div", t.rate.toFixed(1) + "/s", "rate"),
                el("div", t.total.toLocaleString() + " since open", "total"));
    return card;
  }));
}

function renderWindows(windows) {
  const body = document.querySelector("#windows tbody");
  body.replaceChildren(...windows.slice(-24).reverse().map(w => {
    const row = el("tr");
    [w.window_start.slice(11, 19), w.event_type, w.events, w.distinct_users,
     w.login_successes + "/" + w.login_failures, (w.purchase_cents / 100).toFixed(2),
     w.revision].forEach(v => row.append(el("td", v)));
    return row;
  }));
}

function messageItem(item, label) {
  const li = el("li");
  if (label) li.append(el("span", label + " ", "tag"));
  li.append(el("span", item.payload));
  li.addEventListener("click", () => inspect(item.payload));
  return li;
}

function renderDeadLetters(items) {
  document.getElementById("dead-letters").replaceChildren(...items.slice().reverse().map(
    item => messageItem(item, "[" + item.reason_code + "] " + item.reason)));
}

function renderNotifications(items) {
  const list = document.getElementById("notifications");
  if (!items.length) {
    list.replaceChildren(el("li", "none since the live view started", "empty"));
    return;
  }
  list.replaceChildren(...items.slice().reverse().map(item => {
    const note = parsed(item.payload);
    const li = messageItem(item, clock(item.at / 1000) + " " + (note.event_type || "?"));
    li.dataset.eventType = note.event_type || "";
    return li;
  }));
}

// -- health -----------------------------------------------------------------------------------
function seconds(value) {
  return value == null ? "–" : value < 1 ? Math.round(value * 1000) + " ms" : value.toFixed(2) + " s";
}

function renderHealth(healthDoc) {
  const body = document.querySelector("#health tbody");
  body.replaceChildren(...healthDoc.components.map(c => {
    const row = el("tr");
    row.dataset.component = c.name;
    row.dataset.state = c.state;
    row.append(el("td", c.name), el("td", c.state, "badge " + c.state),
               el("td", c.rate == null ? "–" : formatRate(c.rate) + " " + c.unit), el("td", c.detail));
    return row;
  }));
  const lat = healthDoc.latency;
  document.getElementById("latency").textContent = lat.samples
    ? "produce→row latency: p50 " + seconds(lat.p50_s) + ", p95 " + seconds(lat.p95_s) +
      " (" + lat.samples.toLocaleString() + " events sampled, last " + lat.window_s + " s)"
    : "produce→row latency: no events landed in the last " + lat.window_s + " s";
  document.getElementById("sink-lag").textContent = "sink lag: " +
    (healthDoc.sink_lag == null ? "unknown" : healthDoc.sink_lag.toLocaleString() + " messages");
}

// -- the event feed: pause and filter -----------------------------------------------------------
const feed = { kept: [], ids: new Set(), paused: false, frozen: [], unseen: 0, types: new Set() };

function absorbEvents(events) {
  for (const item of events) {  // oldest first
    const id = item.at + "|" + item.payload;
    if (feed.ids.has(id)) continue;  // frames overlap: each carries the newest 15
    feed.ids.add(id);
    const type = parsed(item.payload).event_type;
    feed.kept.unshift({ ...item, id, type: typeof type === "string" ? type : "" });
    if (feed.paused) feed.unseen++;
    if (typeof type === "string" && type && !feed.types.has(type)) {
      feed.types.add(type);
      renderTypeOptions();
    }
  }
  for (const old of feed.kept.splice(FEED_KEPT)) feed.ids.delete(old.id);
}

function renderTypeOptions() {
  const select = document.getElementById("event-type"), chosen = select.value;
  select.replaceChildren(el("option", "all types"), ...[...feed.types].sort().map(t => el("option", t)));
  select.options[0].value = "";
  select.value = chosen;
}

function renderEvents() {
  const type = document.getElementById("event-type").value;
  const text = document.getElementById("event-filter").value.trim().toLowerCase();
  const source = feed.paused ? feed.frozen : feed.kept;
  const shown = source.filter(e => (!type || e.type === type) &&
                                   (!text || e.payload.toLowerCase().includes(text)));
  document.getElementById("events").replaceChildren(
    ...shown.slice(0, FEED_SHOWN).map(item => messageItem(item, item.type || null)));
  const status = document.getElementById("feed-status");
  status.textContent = (feed.paused ? "paused, " + feed.unseen + " new since · " : "") +
    shown.length + " of " + source.length + " shown";
  document.getElementById("events").dataset.paused = String(feed.paused);
}

function togglePause() {
  feed.paused = !feed.paused;
  feed.frozen = feed.paused ? feed.kept.slice() : [];
  feed.unseen = 0;
  document.getElementById("pause").textContent = feed.paused ? "Resume" : "Pause";
  renderEvents();
}

// -- frames -----------------------------------------------------------------------------------
function render(frame) {
  document.getElementById("dagster").href = frame.dagster_url;
  renderKafka(frame.kafka);
  renderTopics(frame.topics);
  if (!chart) window.__chart = chart = makeChart(document.getElementById("chart"));
  updateChart(chart, frame);
  renderHealth(frame.health);
  renderWindows(frame.windows);
  renderDeadLetters(frame.dead_letters);
  renderNotifications(frame.notifications);
  absorbEvents(frame.events);
  renderEvents();
  window.__lastFrame = frame;  // for tests and the curious
}

function onMessage(event) {
  const message = JSON.parse(event.data);
  if (message.kind === "cluster") renderCluster(message);
  else render(message);
}

// -- views ------------------------------------------------------------------------------------
function showView() {
  const cluster = location.hash === "#cluster";
  document.getElementById("view-stream").hidden = cluster;
  document.getElementById("view-cluster").hidden = !cluster;
  for (const tab of document.querySelectorAll("nav a")) {
    tab.classList.toggle("active", tab.getAttribute("href") === (cluster ? "#cluster" : "#stream"));
  }
  // The server sends the Cluster view only to pages showing it (it costs admin requests).
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify(cluster ? { subscribe: "cluster" } : { unsubscribe: "cluster" }));
  }
  if (!cluster && chart) chart.setSize({ width: document.getElementById("chart").clientWidth, height: 230 });
}

function connect() {
  // Opened with ?token=<the right one>, the server answers with a redirect to "/" and an
  // HttpOnly cookie that the WebSocket handshake carries. A ?token still in the address bar
  // (the server has none, or it was wrong) is passed on, and the server's verdict shown.
  const token = new URLSearchParams(location.search).get("token");
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" +
              (token ? "?token=" + encodeURIComponent(token) : "");
  setState("connecting", "connecting…");
  socket = new WebSocket(url);
  socket.onopen = () => { retry = 500; socketOpen = true; setState("open", "live"); showView(); };
  socket.onmessage = onMessage;
  socket.onclose = (event) => {
    socketOpen = false;
    // 1008: refused by policy; the reason says which ("origin not allowed", "token required").
    setState("closed", event.code === 1008 ? "refused: " + (event.reason || "policy")
                                           : "reconnecting…");
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);  // back off up to 10 s
  };
}

document.getElementById("pause").addEventListener("click", togglePause);
document.getElementById("event-type").addEventListener("change", renderEvents);
document.getElementById("event-filter").addEventListener("input", renderEvents);
window.addEventListener("hashchange", showView);
showView();
connect();
