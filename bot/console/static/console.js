// alertpilot console: keep a list or an incident page current while it is open.
// Every few seconds (data-refresh on <main>) the page is fetched again and its <main>
// swapped in, unless the tab is hidden or someone is using a form. The HTML comes from
// this server, already escaped; nothing else is fetched.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.refresh) { return; }
  var every = Math.max(5, parseInt(live.dataset.refresh, 10) || 30) * 1000;

  function busy() {
    var active = document.activeElement;
    if (active && active.closest && active.closest("form")) { return true; }
    if (document.querySelector("details[open]")) { return true; }
    var selection = window.getSelection && window.getSelection();
    return Boolean(selection && String(selection).length);
  }

  function refresh() {
    if (document.hidden || busy()) { return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok || response.redirected) { throw new Error("status " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        var fresh = page.getElementById("live");
        if (fresh && !busy()) {
          live.replaceChildren.apply(live, Array.prototype.slice.call(fresh.childNodes));
          live.dataset.updated = new Date().toISOString();
        }
      })
      .catch(function () { /* the next round tries again */ });
  }

  window.setInterval(refresh, every);
})();
