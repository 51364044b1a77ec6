// Switchboard console: draws the overview's plots and refreshes the parts
// of a page marked data-refresh. No inline script is allowed (CSP), so all
// behaviour is here. Data comes only from this origin.
"use strict";
(function () {
  var EVERY_MS = 15000;
  var plots = {};

  function draw(data) {
    var figures = document.querySelectorAll("[data-plot]");
    figures.forEach(function (fig) {
      var name = fig.getAttribute("data-plot");
      var s = data.connectors[name];
      if (!s) { return; }
      var rows = [data.times, s.delivered, s.failed];
      if (plots[name]) { plots[name].setData(rows); return; }
      var opts = {
        width: Math.max(280, Math.min(fig.clientWidth || 420, 560)),
        height: 160,
        scales: { y: { range: function (u, min, max) { return [0, Math.max(1, max)]; } } },
        series: [
          {},
          { label: "delivered/s", stroke: "#1f7a4d", width: 2 },
          { label: "failed/s", stroke: "#b3261e", width: 2 }
        ],
        axes: [{}, { size: 48 }]
      };
      plots[name] = new uPlot(opts, rows, fig);
      fig.setAttribute("data-drawn", "1");
    });
  }

  function loadSeries() {
    if (!document.querySelector("[data-plot]") || typeof uPlot === "undefined") { return; }
    fetch("/ui/series.json", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(draw)
      .catch(function () { /* the next round tries again */ });
  }

  function refreshParts() {
    var parts = document.querySelectorAll("[data-refresh]");
    if (!parts.length) { return; }
    fetch(location.href, { credentials: "same-origin" })
      .then(function (r) { if (!r.ok || r.redirected) { throw new Error(r.status); } return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        parts.forEach(function (el) {
          var id = el.getAttribute("data-refresh");
          var next = fresh.querySelector('[data-refresh="' + id + '"]');
          if (next) { el.replaceWith(document.importNode(next, true)); }
        });
      })
      .catch(function () { /* keep what is shown */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    loadSeries();
    setInterval(function () { loadSeries(); refreshParts(); }, EVERY_MS);
  });
})();
