// Every logged-in page: the live channel, a WebSocket to /live on this server (the
// session cookie goes with it). The server says at once when this session ends (logged
// in elsewhere, logged out, ...): the page goes to the login page, which says why.
// Page scripts follow topics with
//   var stop = window.dialer.live.subscribe("imports", function (data) { ... });
// and ask window.dialer.live.ready("imports") whether messages arrive now (else poll).
// Reconnects with a growing, jittered delay (1 s doubling to 30 s); while the socket is
// down, app.js's 15-s poll of /session/state still tells the page when its session ends.
"use strict";
(function () {
  var handlers = {}, subscribed = {};
  var ws = null, open = false, ended = false, delay = 1000;

  function send(obj) { if (open) ws.send(JSON.stringify(obj)); }

  function endedNow(why) {
    if (ended) return;
    ended = true;
    window.dialer.ended(why || "");
  }

  function connect() {
    ws = new WebSocket((window.location.protocol === "https:" ? "wss://" : "ws://") + window.location.host + "/live");
    ws.onopen = function () {
      open = true; delay = 1000;
      Object.keys(handlers).forEach(function (t) { send({ type: "subscribe", topic: t }); });
    };
    ws.onmessage = function (e) {
      var m;
      try { m = JSON.parse(e.data); } catch (x) { return; }
      if (m.type === "session.ended") endedNow(m.reason);
      else if (m.type === "subscribed") subscribed[m.topic] = true;
      else if (m.type === "unsubscribed") delete subscribed[m.topic];
      else if (m.type === "publish" && handlers[m.topic]) {
        handlers[m.topic].slice().forEach(function (fn) { try { fn(m.data); } catch (x) { /* the page's bug */ } });
      } else if (m.type === "error" && m.topic) delete subscribed[m.topic];
    };
    ws.onclose = function (e) {
      open = false; subscribed = {};
      if (ended) return;
      if (e.code === 4401) { endedNow(e.reason); return; }  // the session ended
      if (window.dialer.check) window.dialer.check();  // refused or lost: is the session still open?
      window.setTimeout(connect, delay * (0.5 + Math.random()));
      delay = Math.min(2 * delay, 30000);
    };
  }

  window.dialer.live = {
    subscribe: function (topic, fn) {
      (handlers[topic] = handlers[topic] || []).push(fn);
      if (handlers[topic].length === 1) send({ type: "subscribe", topic: topic });
      return function () {
        var list = handlers[topic] || [], i = list.indexOf(fn);
        if (i >= 0) list.splice(i, 1);
        if (list.length === 0 && handlers[topic]) { delete handlers[topic]; delete subscribed[topic]; send({ type: "unsubscribe", topic: topic }); }
      };
    },
    connected: function () { return open; },
    ready: function (topic) { return open && !!subscribed[topic]; },
  };
  if (!document.body || document.body.dataset.session !== "open" || !window.WebSocket) return;
  connect();
})();
