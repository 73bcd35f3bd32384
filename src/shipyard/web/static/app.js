/* Shipyard dashboard script: charts (Plotly.js, served by this server), local times, the time-range
   picker and small form helpers. No inline scripts: pages carry data in <script type="application/json">
   elements and mark elements with data-* attributes; this file finds them. */
(function () {
  "use strict";

  var S = (window.Shipyard = window.Shipyard || {});
  S.palette = ["#1f4fd1", "#e8710a", "#1a7f37", "#c62828", "#7b3fe4", "#0e8a9a", "#b0861c", "#d6336c", "#5f6b7a"];
  S.colors = { ok: "#1a7f37", error: "#c62828", muted: "#8a94a3", accent: "#1f4fd1" };

  var FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';

  /* -- Plotly, loaded once on pages that have charts ------------------------------------------- */
  var plotlyPromise = null;
  S.loadPlotly = function () {
    if (window.Plotly) return Promise.resolve(window.Plotly);
    if (plotlyPromise) return plotlyPromise;
    var meta = document.querySelector('meta[name="shipyard-plotly"]');
    plotlyPromise = new Promise(function (resolve, reject) {
      var s = document.createElement("script");
      s.src = meta ? meta.content : "/static/vendor/plotly.min.js";
      s.onload = function () { resolve(window.Plotly); };
      s.onerror = function () { reject(new Error("could not load " + s.src)); };
      document.head.appendChild(s);
    });
    return plotlyPromise;
  };

  function baseLayout(extra) {
    var layout = {
      font: { family: FONT, size: 12, color: "#1b1f24" },
      margin: { l: 56, r: 16, t: 8, b: 36 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      showlegend: true,
      legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom", font: { size: 11 } },
      hoverlabel: { font: { family: FONT, size: 12 } },
      xaxis: { gridcolor: "#eef0f3", linecolor: "#cfd4dc", zeroline: false, automargin: true },
      yaxis: { gridcolor: "#eef0f3", linecolor: "#cfd4dc", zeroline: false, automargin: true, rangemode: "tozero" },
    };
    return merge(layout, extra || {});
  }

  function merge(a, b) {
    Object.keys(b).forEach(function (k) {
      if (b[k] && typeof b[k] === "object" && !Array.isArray(b[k]) && a[k] && typeof a[k] === "object") {
        a[k] = merge(Object.assign({}, a[k]), b[k]);
      } else {
        a[k] = b[k];
      }
    });
    return a;
  }

  function axis(spec) {
    spec = spec || {};
    var ax = {};
    if (spec.title) ax.title = { text: spec.title, font: { size: 11, color: "#5f6b7a" } };
    if (spec.format) ax.tickformat = spec.format;
    if (spec.suffix) ax.ticksuffix = spec.suffix;
    if (spec.prefix) ax.tickprefix = spec.prefix;
    if (spec.type) ax.type = spec.type;
    if (spec.range) ax.range = spec.range;
    return ax;
  }

  function hoverFor(series, yspec) {
    var fmt = series.format || (yspec && yspec.format) || ",.3~f";
    var pre = series.prefix || (yspec && yspec.prefix) || "";
    var suf = series.suffix || (yspec && yspec.suffix) || "";
    return "%{fullData.name}: " + pre + "%{y:" + fmt + "}" + suf + "<extra></extra>";
  }

  var toDate = function (t) { return new Date(t * 1000); };

  function timeseries(spec) {
    var data = (spec.series || []).map(function (s, i) {
      var color = s.color || S.palette[i % S.palette.length];
      var yspec = s.axis === "y2" ? spec.y2 : spec.y;
      var trace = {
        name: s.name,
        x: (s.x || []).map(toDate),
        y: s.y || [],
        hovertemplate: hoverFor(s, yspec),
        yaxis: s.axis === "y2" ? "y2" : "y",
      };
      if (s.type === "bar") {
        trace.type = "bar";
        trace.marker = { color: color };
        if (spec.barWidth) trace.width = spec.barWidth * 1000 * 0.85;
      } else {
        trace.type = "scatter";
        // A point with no neighbour (traffic in one step only) draws no line: give it a marker.
        var ys = s.y || [];
        var sizes = ys.map(function (v, k) {
          var alone = v !== null && (k === 0 || ys[k - 1] === null) && (k === ys.length - 1 || ys[k + 1] === null);
          return alone ? 6 : 0;
        });
        trace.mode = "lines+markers";
        trace.marker = { color: color, size: sizes };
        trace.line = { color: color, width: 2, dash: s.dash || "solid", shape: "linear" };
        trace.connectgaps = false;
        if (s.type === "area") { trace.fill = "tozeroy"; trace.fillcolor = color + "22"; }
      }
      return trace;
    });
    var layout = baseLayout({
      hovermode: "x unified",
      barmode: spec.stack ? "stack" : "group",
      bargap: 0.15,
      xaxis: { type: "date", hoverformat: "%Y-%m-%d %H:%M" },
      yaxis: axis(spec.y),
    });
    if (spec.range) layout.xaxis.range = [toDate(spec.range[0]), toDate(spec.range[1])];
    if (spec.y2) {
      layout.yaxis2 = merge(axis(spec.y2), { overlaying: "y", side: "right", showgrid: false, rangemode: "tozero", zeroline: false });
      layout.margin.r = 56;
    }
    if (data.length <= 1 && !spec.legend) layout.showlegend = false;
    return { data: data, layout: layout };
  }

  function bars(spec) {
    var horizontal = spec.orientation === "h";
    var data = (spec.series || []).map(function (s, i) {
      var color = s.color || S.palette[i % S.palette.length];
      return {
        type: "bar", name: s.name, orientation: horizontal ? "h" : "v",
        x: horizontal ? s.y : spec.categories, y: horizontal ? spec.categories : s.y,
        marker: { color: s.colors || color },
        hovertemplate: horizontal
          ? "%{y}: " + (spec.y && spec.y.prefix || "") + "%{x:" + ((spec.y && spec.y.format) || ",.3~f") + "}" + ((spec.y && spec.y.suffix) || "") + "<extra>%{fullData.name}</extra>"
          : "%{x}: " + (spec.y && spec.y.prefix || "") + "%{y:" + ((spec.y && spec.y.format) || ",.3~f") + "}" + ((spec.y && spec.y.suffix) || "") + "<extra>%{fullData.name}</extra>",
      };
    });
    var valueAxis = axis(spec.y), catAxis = { type: "category", automargin: true };
    var layout = baseLayout({
      barmode: spec.stack ? "stack" : "group",
      xaxis: horizontal ? valueAxis : catAxis,
      yaxis: horizontal ? merge(catAxis, { autorange: "reversed" }) : valueAxis,
    });
    if (data.length <= 1) layout.showlegend = false;
    return { data: data, layout: layout };
  }

  /* Span waterfall: one horizontal bar per span from its start to its end (ms since the trace
     began), in tree order, indented by depth. */
  function waterfall(spec) {
    var spans = spec.spans || [];
    var t0 = spec.start;
    var labels = [], base = [], width = [], colors = [], text = [], custom = [];
    spans.forEach(function (s) {
      var indent = new Array((s.depth || 0) + 1).join("\u2003");
      labels.push(indent + s.name);
      var start = (s.start - t0) * 1000;
      var dur = Math.max((s.end - s.start) * 1000, 0);
      base.push(start);
      // A zero-length span still gets a visible sliver.
      width.push(Math.max(dur, (spec.total_ms || 1) * 0.004));
      colors.push(s.status === "ok" ? S.palette[(s.depth || 0) % 3] : S.colors.error);
      text.push(dur < 10 ? dur.toFixed(2) + " ms" : dur < 1000 ? dur.toFixed(1) + " ms" : (dur / 1000).toFixed(2) + " s");
      custom.push([start, dur, s.status]);
    });
    var y = spans.map(function (_, i) { return i; });
    var data = [{
      type: "bar", orientation: "h", y: y, x: width, base: base,
      marker: { color: colors },
      text: text, textposition: "outside", cliponaxis: false, textfont: { size: 11, color: "#5f6b7a" },
      customdata: custom,
      hovertext: labels.map(function (l) { return l.trim(); }),
      hovertemplate: "<b>%{hovertext}</b><br>start +%{customdata[0]:,.2f} ms<br>duration %{customdata[1]:,.2f} ms<br>status %{customdata[2]}<extra></extra>",
    }];
    var layout = baseLayout({
      showlegend: false,
      bargap: 0.3,
      margin: { l: 10, r: 60, t: 8, b: 36 },
      xaxis: { title: { text: "ms since the request arrived", font: { size: 11, color: "#5f6b7a" } }, rangemode: "tozero", ticksuffix: " ms" },
      yaxis: { tickmode: "array", tickvals: y, ticktext: labels, autorange: "reversed", automargin: true, rangemode: "normal", gridcolor: "rgba(0,0,0,0)" },
    });
    return { data: data, layout: layout };
  }

  S.kinds = { timeseries: timeseries, bar: bars, waterfall: waterfall };

  function isEmpty(fig) {
    return !fig.data.length || fig.data.every(function (t) { return !(t.x || t.y || []).length; });
  }

  /* Render `spec` into `el`. spec.kind: timeseries | bar | waterfall | plotly ({data, layout}). */
  S.chart = function (el, spec) {
    return S.loadPlotly().then(function (Plotly) {
      var fig = spec.kind === "plotly" ? { data: spec.data || [], layout: baseLayout(spec.layout) } : S.kinds[spec.kind](spec);
      if (isEmpty(fig)) {
        fig.layout.annotations = [{ text: spec.empty || "No data in this time range", showarrow: false,
          xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { size: 13, color: "#8a94a3" } }];
        fig.layout.xaxis = merge(fig.layout.xaxis || {}, { showticklabels: !!spec.range });
        fig.layout.yaxis = merge(fig.layout.yaxis || {}, { showticklabels: false, range: [0, 1] });
      }
      el.classList.add("chart-ready");
      return Plotly.newPlot(el, fig.data, fig.layout, { displayModeBar: false, responsive: true });
    });
  };

  S.renderCharts = function (root) {
    var els = (root || document).querySelectorAll("[data-chart]");
    var jobs = [];
    els.forEach(function (el) {
      var src = document.getElementById(el.dataset.chart);
      if (!src) return;
      jobs.push(S.chart(el, JSON.parse(src.textContent)).then(function () { el.dataset.rendered = "1"; }));
    });
    return Promise.all(jobs).then(function () { document.documentElement.dataset.chartsReady = "1"; });
  };

  /* -- times in the browser's time zone ------------------------------------------------------- */
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  S.formatTime = function (d, style) {
    var date = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());
    var time = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    if (style === "time") return time;
    if (style === "short") {
      var today = new Date();
      return d.toDateString() === today.toDateString() ? time : pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + time.slice(0, 5);
    }
    return date + " " + time;
  };
  S.ago = function (seconds) {
    var s = Math.max(0, seconds);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  };
  function localTimes(root) {
    (root || document).querySelectorAll("time[data-ts]").forEach(function (el) {
      var d = new Date(parseFloat(el.dataset.ts) * 1000);
      var style = el.dataset.style || "datetime";
      el.title = S.formatTime(d, "datetime") + " (" + Intl.DateTimeFormat().resolvedOptions().timeZone + ")";
      el.textContent = style === "ago" ? S.ago(Date.now() / 1000 - parseFloat(el.dataset.ts)) : S.formatTime(d, style);
    });
  }
  S.localTimes = localTimes;

  function toLocalInput(ts) {
    var d = new Date(ts * 1000);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  /* -- forms ----------------------------------------------------------------------------------- */
  function timeRangePickers() {
    document.querySelectorAll("form[data-timerange]").forEach(function (form) {
      var select = form.querySelector("[data-range-select]");
      var custom = form.querySelector("[data-custom-range]");
      form.querySelectorAll("input[data-local]").forEach(function (inp) {
        var ts = parseFloat(inp.dataset.ts);
        inp.value = toLocalInput(isNaN(ts) ? Date.now() / 1000 - (inp.dataset.local === "since" ? 3600 : 0) : ts);
      });
      select.addEventListener("change", function () {
        if (select.value === "custom") { custom.hidden = false; return; }
        custom.hidden = true;
        form.requestSubmit();
      });
      form.addEventListener("submit", function () {
        var custom = select.value === "custom";
        form.querySelectorAll("input[data-local]").forEach(function (inp) {
          var hidden = form.querySelector('input[type="hidden"][name="' + inp.dataset.local + '"]');
          hidden.disabled = !custom || !inp.value;
          if (custom && inp.value) hidden.value = String(Math.round(new Date(inp.value).getTime() / 1000));
        });
        if (custom) select.disabled = true;
      });
    });
  }

  function formHelpers() {
    document.querySelectorAll("[data-autosubmit]").forEach(function (el) {
      el.addEventListener("change", function () { el.form.requestSubmit(); });
    });
    // Empty fields stay out of the URL (route= &model= …).
    document.querySelectorAll("form[method='get'], form:not([method])").forEach(function (form) {
      form.addEventListener("submit", function () {
        form.querySelectorAll("input, select").forEach(function (el) {
          if (!el.value && el.name) el.disabled = true;
        });
      });
    });
    document.querySelectorAll("tr[data-href]").forEach(function (tr) {
      tr.classList.add("clickable");
      tr.addEventListener("click", function (ev) {
        if (ev.target.closest("a, button, input, select") || window.getSelection().toString()) return;
        if (ev.ctrlKey || ev.metaKey) window.open(tr.dataset.href, "_blank");
        else window.location.href = tr.dataset.href;
      });
    });
  }

  function autoRefresh() {
    var select = document.querySelector("select[data-refresh]");
    if (!select) return;
    var key = "shipyard.refresh." + window.location.pathname;
    var saved = window.localStorage.getItem(key);
    if (saved !== null) select.value = saved;
    var timer = null;
    function arm() {
      if (timer) clearTimeout(timer);
      var s = parseInt(select.value, 10);
      if (s > 0) timer = setTimeout(function () { window.location.reload(); }, s * 1000);
    }
    select.addEventListener("change", function () { window.localStorage.setItem(key, select.value); arm(); });
    arm();
  }

  function init() {
    localTimes();
    timeRangePickers();
    formHelpers();
    autoRefresh();
    if (document.querySelector("[data-chart]")) {
      S.renderCharts().catch(function (err) { console.error("chart rendering failed:", err); });
    } else {
      document.documentElement.dataset.chartsReady = "1";
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
