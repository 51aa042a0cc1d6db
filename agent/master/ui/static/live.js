// Live updates: the master's /ui/events stream says when the farm changed; the page then
// fetches its own URL's live part (X-Live: 1) and swaps it in. Without JavaScript, or
// without the stream, the page is the same, as of when it was loaded.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var state = document.getElementById("live-state");
  if (!live || !window.EventSource || !window.fetch) { return; }
  var busy = false, again = false;

  function show(word) { if (state) { state.textContent = word; state.dataset.state = word; } }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { headers: { "X-Live": "1" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null) { live.innerHTML = html; live.dataset.updated = String(Date.now()); }
      })
      .catch(function () { show("offline"); })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  var events = new EventSource("/ui/events");
  events.addEventListener("open", function () { show("live"); });
  events.addEventListener("error", function () { show("reconnecting"); });
  events.addEventListener("change", refresh);
})();
