/* The trace page's feedback form: pick thumbs up or down, add an optional comment, POST it to
   /api/feedback and show the stored row without reloading the page. */
(function () {
  "use strict";
  var form = document.querySelector("form[data-feedback-form]");
  if (!form) return;
  var traceId = form.dataset.traceId;
  var buttons = form.querySelectorAll("button[data-score]");
  var submit = form.querySelector("[data-feedback-submit]");
  var status = form.querySelector("[data-feedback-status]");
  var list = document.querySelector("[data-feedback-list]");
  var empty = document.querySelector("[data-feedback-empty]");
  var count = document.querySelector("[data-feedback-count]");
  var chosen = null;

  buttons.forEach(function (b) {
    b.addEventListener("click", function () {
      chosen = b.dataset.score;
      buttons.forEach(function (o) { o.setAttribute("aria-pressed", String(o === b)); });
      submit.disabled = false;
      status.textContent = "";
    });
  });

  function addRow(row) {
    var li = document.createElement("li");
    var mark;
    if (row.kind === "thumbs") {
      var icon = form.querySelector('button[data-score="' + (row.score >= 0.5 ? "up" : "down") + '"] svg');
      mark = icon.cloneNode(true);
    } else {
      mark = document.createElement("b");
      mark.textContent = row.score.toFixed(2);
    }
    var meta = document.createElement("span");
    meta.className = "faint";
    meta.textContent = " " + row.name + (row.user_id ? " · " + row.user_id : "") + " · " +
      window.Shipyard.formatTime(new Date(row.created_at * 1000), "short");
    li.appendChild(mark);
    li.appendChild(meta);
    if (row.comment) {
      var c = document.createElement("div");
      c.className = "fb-comment";
      c.textContent = row.comment;
      li.appendChild(c);
    }
    li.dataset.feedbackId = String(row.id);
    list.insertBefore(li, list.firstChild);
    empty.hidden = true;
    count.textContent = String(list.children.length);
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!chosen) return;
    submit.disabled = true;
    status.textContent = "Sending…";
    var body = { trace_id: traceId, score: chosen, name: "user" };
    var comment = form.querySelector("textarea[name=comment]").value.trim();
    if (comment) body.comment = comment;
    var csrf = document.querySelector('meta[name="csrf-token"]');
    fetch("/api/feedback", {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": csrf ? csrf.content : "" },
      body: JSON.stringify(body),
    })
      .then(function (r) {
        return r.json().then(function (data) { return { ok: r.ok, data: data }; });
      })
      .then(function (res) {
        if (!res.ok) throw new Error((res.data.error && res.data.error.message) || "the server refused the feedback");
        addRow(res.data);
        form.reset();
        chosen = null;
        buttons.forEach(function (o) { o.setAttribute("aria-pressed", "false"); });
        status.textContent = "Thanks — saved.";
      })
      .catch(function (err) {
        submit.disabled = false;
        status.textContent = "Not saved: " + err.message;
      });
  });
})();
