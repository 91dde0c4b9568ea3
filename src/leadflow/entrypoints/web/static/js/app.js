// leadflow dashboard: charts from data-* attributes, htmx CSRF header, confirm dialogs.
// No inline scripts anywhere (CSP script-src 'self').
(function () {
  "use strict";

  var PALETTE = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6",
                 "#14b8a6", "#f97316", "#64748b", "#ec4899", "#84cc16", "#06b6d4"];
  var FONT = '"Pretendard Variable", Pretendard, system-ui, sans-serif';

  function locale() { return document.body.dataset.locale === "ko" ? "ko-KR" : "en-US"; }
  function fmt(n) { return Number(n).toLocaleString(locale()); }

  function renderChart(el) {
    if (!window.echarts || el.dataset.rendered) { return; }
    var points = JSON.parse(el.dataset.points || "[]");
    var chart = window.echarts.init(el, null, { renderer: "svg" });
    var base = {
      color: PALETTE,
      textStyle: { fontFamily: FONT },
      animation: false,
      tooltip: { valueFormatter: fmt },
    };
    var kind = el.dataset.chart;
    if (kind === "sankey") {
      // data-points: {nodes: [{name, label, kind}], links: [{source, target, value}]}
      var colors = { main: "#4f46e5", won: "#10b981", recycle: "#f59e0b", dead: "#9ca3af", "return": "#a5b4fc" };
      var labels = {};
      points.nodes.forEach(function (n) { labels[n.name] = n.label; });
      chart.setOption(Object.assign(base, {
        tooltip: { trigger: "item", formatter: function (p) {
          if (p.dataType === "edge") {
            return labels[p.data.source] + " → " + labels[p.data.target] + ": " + fmt(p.data.value);
          }
          return labels[p.name] + ": " + fmt(p.value);
        } },
        series: [{ type: "sankey", left: 8, right: 150, top: 12, bottom: 12, nodeGap: 14, nodeWidth: 14,
          layoutIterations: 64, emphasis: { focus: "adjacency" },
          lineStyle: { color: "gradient", opacity: 0.35, curveness: 0.5 },
          label: { color: "#374151", fontSize: 11, lineHeight: 14, width: 100, overflow: "break",
            formatter: function (p) { return labels[p.name] + "\n" + fmt(p.value); } },
          data: points.nodes.map(function (n) {
            return { name: n.name, itemStyle: { color: colors[n.kind] || colors.main, borderWidth: 0 } };
          }),
          links: points.links }],
      }));
    } else if (kind === "lines") {
      // data-points: {weeks: [...], names: [a, b], current: [...], candidate: [...]}
      chart.setOption(Object.assign(base, {
        tooltip: { trigger: "axis", valueFormatter: fmt },
        legend: { top: 0, icon: "roundRect", textStyle: { color: "#4b5563" } },
        grid: { left: 8, right: 16, top: 32, bottom: 8, containLabel: true },
        xAxis: { type: "category", data: points.weeks.map(function (w) { return w.slice(5); }),
          axisLabel: { color: "#6b7280" }, axisLine: { lineStyle: { color: "#d1d5db" } } },
        yAxis: { type: "value", minInterval: 1, axisLabel: { formatter: fmt, color: "#6b7280" },
          splitLine: { lineStyle: { color: "#eef0f3" } } },
        series: [
          { name: points.names[0], type: "line", symbol: "none", lineStyle: { width: 2.5 }, data: points.current },
          { name: points.names[1], type: "line", symbol: "none", lineStyle: { width: 2.5, type: "dashed" }, data: points.candidate },
        ],
      }));
    } else if (kind === "grouped") {
      // data-points: {categories: [...], series: [{name, data: [...]}]}: bars side by side
      chart.setOption(Object.assign(base, {
        tooltip: { trigger: "axis", axisPointer: { type: "shadow" }, valueFormatter: fmt },
        legend: { top: 0, type: "scroll", icon: "roundRect", textStyle: { color: "#4b5563" } },
        grid: { left: 8, right: 16, top: 36, bottom: 8, containLabel: true },
        xAxis: { type: "category", data: points.categories,
          axisLabel: { color: "#374151", interval: 0, hideOverlap: true },
          axisLine: { lineStyle: { color: "#d1d5db" } }, axisTick: { show: false } },
        yAxis: { type: "value", axisLabel: { formatter: fmt, color: "#6b7280" },
          splitLine: { lineStyle: { color: "#eef0f3" } } },
        series: points.series.map(function (s) {
          return { name: s.name, type: "bar", barMaxWidth: 14, barGap: "10%",
            itemStyle: { borderRadius: [3, 3, 0, 0] }, data: s.data };
        }),
      }));
    } else if (kind === "donut") {
      chart.setOption(Object.assign(base, {
        tooltip: { trigger: "item", valueFormatter: fmt },
        legend: { orient: "vertical", right: 0, top: "middle", icon: "circle", textStyle: { color: "#4b5563" } },
        series: [{ type: "pie", radius: ["52%", "78%"], center: ["35%", "50%"], avoidLabelOverlap: true,
          label: { show: false }, itemStyle: { borderColor: "#fff", borderWidth: 2 },
          data: points.map(function (p) { return { name: p[0], value: p[1] }; }) }],
      }));
    } else if (kind === "bar") {
      var sorted = points.slice().reverse();
      // ECharts under-measures Korean labels (containLabel cuts them): reserve the width.
      var wide = 0;
      sorted.forEach(function (p) {
        var w = 0;
        String(p[0]).split("").forEach(function (c) { w += c.charCodeAt(0) > 0x2e80 ? 13 : 7; });
        wide = Math.max(wide, w);
      });
      var cjk = sorted.some(function (p) { return /[\u2e80-\uffff]/.test(String(p[0])); });
      var grid = cjk ? { left: wide + 16, right: 24, top: 8, bottom: 24, containLabel: false }
                     : { left: 8, right: 24, top: 8, bottom: 8, containLabel: true };
      chart.setOption(Object.assign(base, {
        tooltip: { trigger: "axis", axisPointer: { type: "shadow" }, valueFormatter: fmt },
        grid: grid,
        xAxis: { type: "value", axisLabel: { formatter: fmt, color: "#6b7280" }, splitLine: { lineStyle: { color: "#eef0f3" } } },
        yAxis: { type: "category", data: sorted.map(function (p) { return p[0]; }), axisLabel: { color: "#374151" },
          axisLine: { show: false }, axisTick: { show: false } },
        series: [{ type: "bar", barMaxWidth: 18, itemStyle: { borderRadius: [0, 4, 4, 0] },
          data: sorted.map(function (p) { return p[1]; }) }],
      }));
    } else {
      chart.setOption(Object.assign(base, {
        tooltip: { trigger: "axis", valueFormatter: fmt },
        grid: { left: 8, right: 16, top: 12, bottom: 8, containLabel: true },
        xAxis: { type: "category", boundaryGap: false, data: points.map(function (p) { return p[0].slice(5); }),
          axisLabel: { color: "#6b7280" }, axisLine: { lineStyle: { color: "#d1d5db" } } },
        yAxis: { type: "value", axisLabel: { formatter: fmt, color: "#6b7280" }, splitLine: { lineStyle: { color: "#eef0f3" } } },
        series: [{ name: el.dataset.seriesName || "", type: "line", smooth: true, symbol: "none",
          lineStyle: { width: 2.5 }, areaStyle: { opacity: 0.12 },
          data: points.map(function (p) { return p[1]; }) }],
      }));
    }
    drillOnClick(chart, el);
    el.dataset.rendered = "1";
    window.addEventListener("resize", function () { chart.resize(); });
  }

  // Drill-downs: data-drill maps a Sankey link ("source>target"), a node or a bar's
  // category to the list of leads behind it; clicking it opens that list.
  function drillOnClick(chart, el) {
    if (!el.dataset.drill) { return; }
    var hrefs = JSON.parse(el.dataset.drill);
    chart.on("click", function (p) {
      var key = p.dataType === "edge" ? p.data.source + ">" + p.data.target : p.name;
      var href = hrefs[key];
      if (typeof href === "string" && href.charAt(0) === "/" && href.charAt(1) !== "/") {
        window.location.assign(href);
      }
    });
  }

  function init(root) {
    (root || document).querySelectorAll("[data-chart]").forEach(renderChart);
  }

  document.addEventListener("DOMContentLoaded", function () {
    // Draw once the web font is in: ECharts measures label widths (Korean labels included).
    if (document.fonts && document.fonts.ready) {
      document.fonts.ready.then(function () { init(document); });
    } else {
      init(document);
    }
    document.body.addEventListener("htmx:configRequest", function (evt) {
      var token = document.body.dataset.csrf;
      if (token) { evt.detail.headers["X-CSRF-Token"] = token; }
    });
    document.body.addEventListener("htmx:afterSwap", function (evt) { init(evt.target); });
    document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
      select.addEventListener("change", function () {
        if (select.id === "slice-by") {
          var value = select.form.querySelector("#slice-value");
          if (value) { value.value = ""; }
        }
        select.form.requestSubmit();
      });
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (evt) {
        if (!window.confirm(form.dataset.confirm)) { evt.preventDefault(); }
      });
    });
  });
})();
