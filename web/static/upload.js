// List upload: drag and drop (or choose) a file; it is sent as the request body with
// upload progress, then the import's progress comes over the live channel (live.js,
// topic "imports"), or is polled while the socket is down.
"use strict";
(function () {
  var form = document.getElementById("upload-form");
  var drop = document.getElementById("drop"), input = document.getElementById("file");
  var box = document.getElementById("progress"), bar = document.getElementById("bar");
  var phase = document.getElementById("phase"), rowsEl = document.getElementById("rows");
  var errEl = document.getElementById("upload-error");

  function fail(msg) { errEl.textContent = msg; errEl.hidden = false; phase.textContent = "Stopped."; }

  var live = window.dialer.live, following = null;
  // subscribed before any upload, so no message of the job is missed
  if (live) live.subscribe("imports", function (job) { if (following) following(job); });

  function follow(url, token) {
    var over = false;
    function show(job) {
      if (over) return;
      bar.value = Math.round(1000 * job.fraction);
      rowsEl.textContent = job.rows + " rows read";
      if (job.state === "done") { over = true; phase.textContent = "Imported."; window.location.assign(job.import_url); }
      else if (job.state === "failed") {
        over = true;
        fail(job.error);
        if (job.import_url) { var a = document.createElement("a"); a.href = job.import_url; a.textContent = " See the import."; errEl.appendChild(a); }
      } else phase.textContent = job.state === "queued" ? "Waiting for the import to start…" : "Importing…";
    }
    following = function (job) { if (job.token === token) show(job); };
    function poll() {  // at once, then every 0.4 s while the socket is down (every 5 s as a check when it is up)
      if (over) return;
      fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
        .then(function (r) { if (r.status === 401) { window.dialer.ended(""); throw new Error("logged out"); } return r.json(); })
        .then(function (job) { show(job); window.setTimeout(poll, live && live.ready("imports") ? 5000 : 400); })
        .catch(function (e) { if (e.message !== "logged out") fail("Lost contact with the server: " + e.message); });
    }
    poll();
  }

  function send(file) {
    if (!file) return;
    errEl.hidden = true; box.hidden = false; bar.value = 0; phase.textContent = "Uploading " + file.name + "…";
    var q = new URLSearchParams({ name: file.name, map: document.getElementById("map").value,
      dedupe: document.getElementById("dedupe").value, region: document.getElementById("region").value });
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.url + "?" + q.toString());
    xhr.setRequestHeader("X-Requested-With", "fetch");
    xhr.setRequestHeader("X-CSRF-Token", window.dialer.csrf());
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = function (e) { if (e.lengthComputable) bar.value = Math.round(1000 * e.loaded / e.total); };
    xhr.onload = function () {
      var body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 401) { window.dialer.ended(body.ended || ""); return; }
      if (xhr.status !== 202) { fail(body.error || ("upload refused (" + xhr.status + ")")); return; }
      phase.textContent = "Importing…"; bar.value = 0; follow(body.status_url, body.token);
    };
    xhr.onerror = function () { fail("The upload failed (network)."); };
    xhr.send(file);
  }

  input.addEventListener("change", function () { send(input.files[0]); });
  ["dragenter", "dragover"].forEach(function (t) {
    drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (t) {
    drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (e) { if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]); });
})();
