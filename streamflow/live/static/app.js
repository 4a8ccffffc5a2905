// StreamFlow live view. Every piece of stream data is inserted as text (textContent), never
// as HTML: payloads come from producers we do not control.
"use strict";

const COLORS = { "user-events": "#7cc4ff", "analytics": "#9be27c", "notifications": "#e2c77c",
                 "dead-letter-topic": "#ff7c7c" };
const stateEl = document.getElementById("state");
let socket = null, retry = 500, lastFrameAt = 0;

function setState(state, text) {
  stateEl.className = "state " + state;
  stateEl.dataset.state = state;
  stateEl.textContent = text;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function inspect(payload) {
  let text = payload;
  try { text = JSON.stringify(JSON.parse(payload), null, 2); } catch (e) { /* not JSON */ }
  document.getElementById("inspector").textContent = text;
}

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

function renderChart(topics) {
  const canvas = document.getElementById("chart"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const max = Math.max(1, ...Object.values(topics).flatMap(t => t.series));
  for (const [name, t] of Object.entries(topics)) {
    ctx.strokeStyle = COLORS[name] || "#ccc"; ctx.beginPath();
    t.series.forEach((v, i) => {
      const x = i * canvas.width / (t.series.length - 1);
      const y = canvas.height - 4 - v * (canvas.height - 8) / max;
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
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

function renderFeed(id, items, withReason) {
  const list = document.getElementById(id);
  list.replaceChildren(...items.slice().reverse().map(item => {
    const li = el("li");
    if (withReason) li.append(el("span", "[" + item.reason_code + "] " + item.reason + " ", "reason"));
    li.append(el("span", item.payload));
    li.addEventListener("click", () => inspect(item.payload));
    return li;
  }));
}

function render(frame) {
  lastFrameAt = Date.now();
  document.getElementById("dagster").href = frame.dagster_url;
  renderTopics(frame.topics);
  renderChart(frame.topics);
  renderWindows(frame.windows);
  renderFeed("dead-letters", frame.dead_letters, true);
  renderFeed("events", frame.events, false);
  window.__lastFrame = frame;  // for tests and the curious
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
  socket.onopen = () => { retry = 500; setState("open", "live"); };
  socket.onmessage = (event) => render(JSON.parse(event.data));
  socket.onclose = (event) => {
    // 1008: refused by policy; the reason says which ("origin not allowed", "token required").
    setState("closed", event.code === 1008 ? "refused: " + (event.reason || "policy")
                                           : "reconnecting…");
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);  // back off up to 10 s
  };
}

connect();
