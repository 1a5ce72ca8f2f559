// The trunk page: while "Check registration" waits for the registrar (a few seconds at
// most), say so and keep the button from being pressed twice.
"use strict";
(function () {
  var form = document.getElementById("check-form");
  if (!form) return;
  form.addEventListener("submit", function () {
    var button = document.getElementById("check");
    var note = document.getElementById("checking");
    if (button) button.disabled = true;
    if (note) note.hidden = false;
  });
})();
