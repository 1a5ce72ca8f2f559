// The dry run's chart: dialable leads per hour (bars), and the leads held back by each reason (lines).
"use strict";
(function () {
  var data = JSON.parse(document.getElementById("dryrun-data").textContent);
  var canvas = document.getElementById("dryrun-chart");
  if (!canvas || !window.Chart) return;
  var labels = data.hours.map(function (h) { return h.at.slice(5, 16).replace("T", " "); });
  var reasons = {};
  data.hours.forEach(function (h) { Object.keys(h.blocked).forEach(function (k) { reasons[k] = true; }); });
  var palette = ["#c0392b", "#8e44ad", "#d35400", "#7f8c8d", "#16a085", "#2c3e50"];
  // bars: the dialable leads; lines: the leads each reason holds back (a lead held back
  // by two reasons is on both lines, so the lines are not stacked)
  var sets = [{ type: "bar", label: "dialable", data: data.hours.map(function (h) { return h.dialable; }),
                backgroundColor: "#1f5fbf", order: 2 }];
  Object.keys(reasons).forEach(function (k, i) {
    var c = palette[i % palette.length];
    sets.push({ type: "line", label: "held back: " + k, data: data.hours.map(function (h) { return h.blocked[k] || 0; }),
                borderColor: c, backgroundColor: c, stepped: "middle", pointRadius: 0, borderWidth: 2, order: 1 });
  });
  new window.Chart(canvas, {
    type: "bar",
    data: { labels: labels, datasets: sets },
    options: { animation: false, maintainAspectRatio: false, responsive: true,
               scales: { x: { title: { display: true, text: "hour (UTC)" } },
                         y: { beginAtZero: true, title: { display: true, text: "leads" } } } },
  });
  canvas.dataset.drawn = "yes";
})();
