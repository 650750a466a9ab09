// blockyard console: progressive enhancement only. Every page reads and every form works
// without this script; it adds live updates (short polling of a fragment) and confirmations.
(function () {
  "use strict";
  // An element with data-poll="URL" is replaced by the fragment at URL every data-every ms
  // (3000 by default) while the page is visible; a fragment without data-poll stops the loop.
  function poll(el) {
    var every = parseInt(el.getAttribute("data-every") || "3000", 10);
    var timer = setTimeout(function tick() {
      if (document.hidden) { timer = setTimeout(tick, every); return; }
      fetch(el.getAttribute("data-poll"), { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          var box = document.createElement("div");
          box.innerHTML = html.trim();
          var fresh = box.firstElementChild;
          if (!fresh) return;
          el.replaceWith(fresh);
          if (fresh.hasAttribute("data-poll")) poll(fresh);
        })
        .catch(function () { timer = setTimeout(tick, every * 2); });
    }, every);
  }
  // A form with data-confirm="question" asks before it is sent.
  document.addEventListener("submit", function (event) {
    var q = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (q && !window.confirm(q)) event.preventDefault();
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
  });
})();
