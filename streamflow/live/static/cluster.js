// The Cluster view: brokers (up or down), each partition's replicas, topics (partitions,
// retention, offsets) and consumer groups with their lag, from the server's cluster documents
// (streamflow.cluster, refreshed every few seconds while this view is shown). Names and ids
// are inserted as text, never as HTML.
"use strict";

function retention(ms) {
  if (ms == null || ms < 0) return "unlimited";
  const hours = ms / 3600000;
  return hours >= 48 && hours % 24 === 0 ? hours / 24 + " days"
       : hours >= 1 ? +hours.toFixed(1) + " h" : Math.round(ms / 1000) + " s";
}

function count(n) {
  return n == null ? "–" : n.toLocaleString();
}

function tableRows(selector, rows) {
  document.querySelector(selector + " tbody").replaceChildren(...rows);
}

function row(cells, data) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    td.textContent = cell == null ? "–" : String(cell);
    tr.append(td);
  }
  Object.assign(tr.dataset, data || {});
  return tr;
}

// Brokers up or down and each partition's leader and in-sync replicas (streamflow.cluster_health):
// a broker down, an under-replicated or an offline partition is marked by its class.
function renderReplication(rep) {
  const state = document.getElementById("replication-state");
  state.textContent = "Kafka " + rep.state + (rep.reasons.length ? ": " + rep.reasons.join("; ") : "");
  state.className = "note replication " + rep.state;
  state.dataset.state = rep.state;
  document.getElementById("brokers").replaceChildren(...rep.brokers.map(b => {
    const li = document.createElement("li");
    li.textContent = "broker " + b.id + (b.address ? " at " + b.address : "") + ": " +
                     (b.up ? "up" : "down") + (b.controller ? " (controller)" : "");
    li.className = b.up ? "up" : "down";
    Object.assign(li.dataset, { broker: b.id, up: b.up });
    return li;
  }));
  tableRows("#cluster-partitions", rep.partitions.map(p => {
    const tr = row([p.topic, p.partition, p.leader == null ? "none" : p.leader,
                    p.replicas.join(", "), p.isr.join(", "), p.state],
                   { partition: p.topic + ":" + p.partition, state: p.state });
    tr.className = p.state.replace(" ", "-");
    return tr;
  }));
}

function renderCluster(doc) {
  const status = document.getElementById("cluster-status");
  const when = new Date(doc.t * 1000).toLocaleTimeString();
  if (doc.error) {  // the previous tables stay, marked as old
    status.textContent = "Kafka did not answer at " + when + ": " + doc.error;
    status.className = "cluster-status error";
    return;
  }
  status.textContent = "as of " + when + " (refreshed every few seconds while shown)";
  status.className = "cluster-status";

  renderReplication(doc.replication);
  document.getElementById("brokers").append(
    ...(doc.cluster_id ? [Object.assign(document.createElement("li"),
                                        { textContent: "cluster id " + doc.cluster_id })] : []));

  tableRows("#cluster-topics", doc.topics.map(t => row(
    [t.name, t.partitions, retention(t.retention_ms), count(t.messages),
     t.end_offsets.map(count).join(" · ")], { topic: t.name })));

  const groupRows = [];
  for (const g of doc.groups) {
    groupRows.push(row([g.group_id, g.state, g.member_count, count(g.total_lag), ""],
                       { group: g.group_id }));
    for (const p of g.partitions) {
      const tr = row(["", p.topic + " [" + p.partition + "]", p.owner || "unassigned",
                      count(p.lag), count(p.committed) + " / " + count(p.end)],
                     { group: g.group_id, partition: p.topic + ":" + p.partition });
      tr.className = "partition";
      groupRows.push(tr);
    }
  }
  tableRows("#cluster-groups", groupRows);
  window.__lastCluster = doc;  // for tests and the curious
}
