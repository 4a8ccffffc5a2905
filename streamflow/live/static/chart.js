// The throughput chart (uPlot, vendored in vendor/): messages per second of each topic over
// the frame's last 3 minutes. One y axis for all, arcsinh-scaled (linear near 0, logarithmic
// above), so 1 dead letter/s stays a visible line next to thousands of events/s whatever the
// mix of rates; the axis and the legend show real rates, with their unit.
"use strict";

const CHART_SERIES = [  // [topic, legend label, colour]
  ["user-events", "user-events", "#7cc4ff"],
  ["analytics", "analytics (windows)", "#9be27c"],
  ["notifications", "notifications", "#e2c77c"],
  ["dead-letter-topic", "dead letters", "#ff7c7c"],
];
const AXIS = { stroke: "#9fb3c8", grid: { stroke: "#26323d", width: 1 },
               ticks: { stroke: "#26323d", width: 1 } };

function formatRate(v) {
  if (v == null) return "–";
  if (v >= 1000) {
    const k = v / 1000;
    return (k >= 10 || Number.isInteger(k) ? k.toFixed(0) : k.toFixed(1)) + "k";
  }
  return v >= 10 || Number.isInteger(v) ? v.toFixed(0) : v.toFixed(1);
}

// Ticks at 0, 1, 10, 100 ... up to the top of the scale: even steps on an arcsinh axis.
function decades(max) {
  const ticks = [0];
  for (let v = 1; v <= max; v *= 10) ticks.push(v);
  return ticks;
}

function makeChart(box) {
  const opts = {
    width: Math.max(box.clientWidth, 300), height: 230,
    scales: {
      x: { time: true },
      // Linear below 0.1/s, logarithmic above: the counts are whole messages per second, so
      // 0 stays the baseline and 1/s stands ~a quarter of the way up next to 5,000/s (with
      // a threshold of 1, a tenth). At least 0-10/s: an idle stream draws flat lines at 0.
      y: { distr: 4, asinh: 0.1, range: (u, min, max) => [0, Math.max(10, max)] },
    },
    axes: [
      { ...AXIS, label: "time (local)", labelSize: 20 },
      { ...AXIS, label: "messages/s (arcsinh scale)", labelSize: 20, size: 55,
        space: 12, splits: (u, axis, min, max) => decades(max),
        values: (u, ticks) => ticks.map(v => v == null ? "" : formatRate(v)) },
    ],
    series: [
      { label: "time", value: (u, v) => v == null ? "–" : new Date(v * 1000).toLocaleTimeString() },
      ...CHART_SERIES.map(([, label, stroke]) => ({
        label, stroke, width: 1.5, points: { show: false },
        value: (u, v) => v == null ? "–" : formatRate(v) + "/s",
      })),
    ],
    legend: { live: true },
  };
  const chart = new uPlot(opts, [[], ...CHART_SERIES.map(() => [])], box);
  window.addEventListener("resize", () => chart.setSize({ width: Math.max(box.clientWidth, 300),
                                                          height: 230 }));
  return chart;
}

function updateChart(chart, frame) {
  const now = Math.floor(frame.t);
  const length = frame.topics["user-events"].series.length;
  const xs = Array.from({ length }, (_, i) => now - length + i);  // whole seconds, oldest first
  chart.setData([xs, ...CHART_SERIES.map(([topic]) => frame.topics[topic].series)]);
  // Without a cursor over the chart, the legend shows the newest second's rates.
  if (chart.cursor.idx == null) chart.setLegend({ idx: length - 1 });
}
