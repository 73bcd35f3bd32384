/* Registry pages: the runs list's "Compare selected" needs two or more ticked runs. Progressive:
   without this script the form still submits and the server says what is missing. */
(function () {
  "use strict";

  function compareSelection() {
    var form = document.getElementById("compare-form");
    if (!form) return;
    var button = form.querySelector("[data-compare-button]");
    var hint = form.querySelector("[data-compare-hint]");
    var boxes = form.querySelectorAll("input[data-compare]");
    function update() {
      var n = 0;
      boxes.forEach(function (b) { if (b.checked) n += 1; });
      button.disabled = n < 2;
      hint.textContent = n < 2
        ? "Tick two or more runs to compare their params and metrics."
        : n + " runs selected.";
    }
    // The oldest ticked run becomes the baseline the others are compared with (the list shows
    // newest first, which is the order a plain form submit would send).
    form.addEventListener("submit", function (ev) {
      var picked = [];
      boxes.forEach(function (b) { if (b.checked) picked.push(b); });
      if (picked.length < 2) return;
      ev.preventDefault();
      picked.sort(function (x, y) { return parseFloat(x.dataset.start) - parseFloat(y.dataset.start); });
      var ids = picked.map(function (b) { return encodeURIComponent(b.value); }).join(",");
      window.location.href = form.getAttribute("action") + "?ids=" + ids;
    });
    boxes.forEach(function (b) {
      b.addEventListener("change", update);
      // A click on the checkbox must not also open the run (rows are links).
      b.addEventListener("click", function (ev) { ev.stopPropagation(); });
    });
    update();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", compareSelection);
  else compareSelection();
})();
