// Keeps the job page live: polls the job's JSON once a second until the job has finished.
(function () {
  "use strict";
  var section = document.getElementById("job");
  if (!section) { return; }
  var finished = ["succeeded", "failed", "cancelled"];
  var text = function (id, value) { document.getElementById(id).textContent = value; };

  function cell(row, value) {
    var td = document.createElement("td");
    td.textContent = value === null || value === undefined ? "" : value;
    row.appendChild(td);
  }

  function render(job) {
    var status = document.getElementById("job-status");
    status.textContent = job.status;
    status.className = "status status-" + job.status;
    text("job-progress-message", job.progress_message);
    document.getElementById("job-progress").value = job.progress;
    text("job-progress-label", job.progress + "%");
    text("job-attempts", job.attempts);
    text("job-next-retry", job.next_retry_at || "—");
    text("job-error", job.error || "—");
    text("job-result", job.result === null || job.result === undefined ? "—" : JSON.stringify(job.result, null, 2));
    var rows = document.getElementById("job-attempt-rows");
    rows.textContent = "";
    (job.attempt_history || []).forEach(function (a) {
      var row = document.createElement("tr");
      [a.number, a.started_at, a.finished_at, a.outcome, a.retry_delay, a.error].forEach(function (v) { cell(row, v); });
      rows.appendChild(row);
    });
    var log = document.getElementById("job-log");
    log.textContent = "";
    (job.attempt_history || []).forEach(function (a) {
      (a.log || []).forEach(function (line) {
        var span = document.createElement("span");
        span.className = "log-" + line.level.toLowerCase();
        span.textContent = "#" + a.number + " " + line.time + " " + line.level + " " + line.logger + ": " + line.message + "\n";
        log.appendChild(span);
      });
    });
    if (!log.textContent) { log.textContent = "—"; }
    ["job-retry", "job-cancel"].forEach(function (id) {
      var form = document.getElementById(id);
      form.hidden = form.dataset.statuses.split(" ").indexOf(job.status) === -1;
    });
    var running = finished.indexOf(job.status) === -1;
    if (!running) { refreshKindDetails(); }
    return running;
  }

  // A kind's own block (a download link, each webhook response) is drawn by the server:
  // fetch the page once more when the job ends and take the block from it.
  function refreshKindDetails() {
    var block = document.getElementById("job-kind-details");
    if (!block) { return; }
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("job-kind-details");
        if (fresh) { block.innerHTML = fresh.innerHTML; }
      });
  }

  function poll() {
    fetch(section.dataset.url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (job) { if (render(job)) { setTimeout(poll, 1000); } })
      .catch(function () { setTimeout(poll, 3000); });
  }
  if (finished.indexOf(document.getElementById("job-status").textContent.trim()) === -1) { setTimeout(poll, 1000); }
})();
