// celery-durable console: the few live parts. Every page works without this script;
// it refreshes live regions, checks JSON in forms and enables typed confirmations.
// Replaced HTML comes from the console itself, rendered and escaped on the server.
(function () {
  "use strict";

  // -- Live regions: [data-live-url] is re-fetched every [data-live-every] ms -----------
  function live(region) {
    var url = region.getAttribute("data-live-url");
    var every = parseInt(region.getAttribute("data-live-every") || "3000", 10);
    var toggle = document.querySelector('[data-live-toggle="' + region.id + '"]');
    var state = document.querySelector('[data-live-state="' + region.id + '"]');
    var paused = sessionStorage.getItem("durable-live-paused") === "1";
    var dirty = false;
    var timer = null;

    function show() {
      if (toggle) toggle.textContent = paused ? "Resume live refresh" : "Pause live refresh";
      if (state) state.textContent = paused ? "live refresh paused" : "refreshes every " + Math.round(every / 1000) + " s";
    }

    function busy() {
      // Never wipe what someone is typing or has typed into a form of the region.
      var active = document.activeElement;
      return dirty || (active && region.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName));
    }

    function stop() {
      if (timer) clearInterval(timer);
      timer = null;
      if (toggle) toggle.hidden = true;
      if (state) state.textContent = "finished: not refreshed";
    }

    function tick() {
      if (paused || busy() || document.hidden) return;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          var open = [];
          region.querySelectorAll("details[open][id]").forEach(function (d) { open.push(d.id); });
          region.innerHTML = html;
          open.forEach(function (id) {
            var d = document.getElementById(id);
            if (d) d.open = true;
          });
          wire(region);
          if (region.querySelector("[data-live-stop]")) stop();
        })
        .catch(function () {
          if (state) state.textContent = "live refresh failed; reload the page";
        });
    }

    region.addEventListener("input", function () { dirty = true; });
    if (toggle) {
      toggle.addEventListener("click", function () {
        paused = !paused;
        sessionStorage.setItem("durable-live-paused", paused ? "1" : "0");
        show();
        if (!paused) tick();
      });
    }
    show();
    if (region.querySelector("[data-live-stop]")) { stop(); return; }
    timer = setInterval(tick, every);
  }

  // -- Forms ------------------------------------------------------------------------------
  function wire(root) {
    // A timeline row fetches what it shows when it is first opened.
    root.querySelectorAll("details[data-step-url]").forEach(function (row) {
      row.addEventListener("toggle", function () {
        if (!row.open || row.hasAttribute("data-loaded")) return;
        row.setAttribute("data-loaded", "");
        var body = row.querySelector("[data-step-body]");
        fetch(row.getAttribute("data-step-url"), { credentials: "same-origin" })
          .then(function (response) {
            if (!response.ok) throw new Error("HTTP " + response.status);
            return response.text();
          })
          .then(function (html) { body.innerHTML = html; wire(body); })
          .catch(function () { row.removeAttribute("data-loaded"); });
      });
    });
    // A JSON value is checked as it is typed; the server checks it again.
    root.querySelectorAll("textarea[data-json]").forEach(function (area) {
      var note = area.form && area.form.querySelector("[data-json-state]");
      area.addEventListener("input", function () {
        var message = "";
        if (area.value.trim() !== "") {
          try { JSON.parse(area.value); } catch (e) { message = "not JSON: " + e.message; }
        }
        area.setCustomValidity(message);
        if (note) note.textContent = message || (area.value.trim() ? "valid JSON" : "");
      });
    });
    // A bulk action's button works once the count typed is the count shown.
    root.querySelectorAll("input[data-expect]").forEach(function (input) {
      var button = input.form && input.form.querySelector("[data-needs-expected]");
      function check() {
        if (button) button.disabled = input.value.trim() !== input.getAttribute("data-expect");
      }
      input.addEventListener("input", check);
      check();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wire(document);
    document.querySelectorAll("[data-live-url]").forEach(live);
  });
})();
