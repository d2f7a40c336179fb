// Keeps the job page live: polls the job's JSON once a second until the job has finished. The live fields
// are redrawn from the JSON; when an attempt starts or ends, the blocks marked data-refresh (outcome,
// attempts, log, the kind's own details) are taken again from the server-drawn page, so times, durations
// and JSON read the same as on a fresh load. The buttons follow the job's "actions".
(function () {
  "use strict";
  var section = document.getElementById("job");
  if (!section) { return; }
  var finished = ["succeeded", "failed", "cancelled"];
  var seen = { attempts: section.dataset.attempts, status: section.dataset.status };
  var text = function (id, value) { document.getElementById(id).textContent = value; };

  function refreshBlocks() {
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-refresh]").forEach(function (block) {
          var replacement = fresh.getElementById(block.id);
          if (replacement) { block.innerHTML = replacement.innerHTML; }
        });
      });
  }

  function render(job) {
    var status = document.getElementById("job-status");
    status.textContent = job.status;
    status.className = "status status-" + job.status;
    text("job-progress-message", job.progress_message);
    document.getElementById("job-progress").value = job.progress;
    text("job-progress-label", job.progress + "%");
    text("job-attempts", job.attempts);
    document.querySelectorAll("form[data-action]").forEach(function (form) {
      form.hidden = job.actions.indexOf(form.dataset.action) === -1;
    });
    if (String(job.attempts) !== String(seen.attempts) || job.status !== seen.status) {
      seen = { attempts: job.attempts, status: job.status };
      refreshBlocks();
    }
    return finished.indexOf(job.status) === -1;
  }

  function poll() {
    fetch(section.dataset.url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (job) { if (render(job)) { setTimeout(poll, 1000); } })
      .catch(function () { setTimeout(poll, 3000); });
  }
  if (finished.indexOf(section.dataset.status) === -1) { setTimeout(poll, 1000); }
})();
