// Every page: tell a logged-in browser when its session ends (logged in elsewhere,
// timed out, disabled), by asking the server every 15 s (live.js's socket tells it at
// once; this poll is the fallback while the socket is down); scripts send the CSRF token.
"use strict";
window.dialer = {
  csrf: function () {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  },
  ended: function (why) {
    window.location.assign("/login" + (why ? "?ended=" + encodeURIComponent(why) : ""));
  },
};
(function () {
  if (!document.body || document.body.dataset.session !== "open") return;
  function check() {
    fetch("/session/state", { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (s) { if (s.state !== "open") window.dialer.ended(s.state === "none" ? "" : s.state); })
      .catch(function () {});
  }
  window.dialer.check = check;  // live.js: after its socket closes or is refused
  window.setInterval(check, 15000);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) check(); });
})();
