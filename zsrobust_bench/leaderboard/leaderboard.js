/* zsrobust-bench leaderboard: column sorting and filters. Reads only data-* attributes and
   never writes HTML, so entry text cannot become markup. */
(function () {
  "use strict";

  function cellValue(row, col) {
    var cell = row.cells[col];
    if (!cell) { return null; }
    var raw = cell.getAttribute("data-v");
    if (raw === null || raw === "") { return null; }
    if (cell.getAttribute("data-num") === "1") {
      var num = parseFloat(raw);
      return isNaN(num) ? null : num;
    }
    return raw.toLowerCase();
  }

  function sortBy(table, col, th) {
    var numeric = th.getAttribute("data-num") === "1";
    var current = th.getAttribute("aria-sort");
    var dir;
    if (current === "ascending") { dir = "descending"; }
    else if (current === "descending") { dir = "ascending"; }
    else { dir = numeric && col !== 0 ? "descending" : "ascending"; }
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, col);
      var y = cellValue(b, col);
      if (x === null || y === null) { return (x === null ? 1 : 0) - (y === null ? 1 : 0); }
      var c = x < y ? -1 : (x > y ? 1 : 0);
      return dir === "ascending" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.setAttribute("aria-sort", h === th ? dir : "none");
    });
  }

  function applyFilters() {
    var protocol = document.getElementById("f-protocol").value;
    var threat = document.getElementById("f-threat").value;
    var status = document.getElementById("f-status").value;
    Array.prototype.forEach.call(document.querySelectorAll("section.protocol"), function (sec) {
      sec.classList.toggle("is-hidden", protocol !== "" && sec.getAttribute("data-protocol") !== protocol);
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-threat]"), function (el) {
      var show = (threat === "" || el.getAttribute("data-threat") === threat) &&
                 (status === "" || el.getAttribute("data-status") === status);
      el.classList.toggle("is-hidden", !show);
    });
    Array.prototype.forEach.call(document.querySelectorAll("section.protocol"), function (sec) {
      var rows = sec.querySelectorAll("tbody tr");
      var shown = sec.querySelectorAll("tbody tr:not(.is-hidden)").length;
      var counter = sec.querySelector(".count");
      if (counter) { counter.textContent = shown + " of " + rows.length + " rows shown"; }
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.lb"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      var button = th.querySelector("button");
      if (button) { button.addEventListener("click", function () { sortBy(table, col, th); }); }
    });
  });
  ["f-protocol", "f-threat", "f-status"].forEach(function (id) {
    var el = document.getElementById(id);
    if (el) { el.addEventListener("change", applyFilters); }
  });
  applyFilters();
}());
