/* Refreshes the jobqueue dashboard in place: fetches its fragment every few seconds and
   swaps the HTML, so the page never reloads (and never flickers). The fragment is built
   server-side with every value escaped; nothing here interprets it. */
(function () {
    "use strict";
    var box = document.getElementById("jq-dashboard");
    if (!box || !window.fetch) {
        return;
    }
    var url = box.getAttribute("data-fragment-url");
    var every = Math.max(1000, parseInt(box.getAttribute("data-refresh-ms"), 10) || 5000);
    var busy = false;
    var count = 0;

    function refresh() {
        if (busy || document.hidden) {
            return;
        }
        busy = true;
        fetch(url, {credentials: "same-origin", cache: "no-store", headers: {"X-Requested-With": "XMLHttpRequest"}})
            .then(function (response) {
                if (!response.ok) {
                    throw new Error("HTTP " + response.status);
                }
                return response.text();
            })
            .then(function (html) {
                box.innerHTML = html;
                count += 1;
                box.setAttribute("data-refreshes", String(count));
                box.classList.remove("jq-stale");
            })
            .catch(function () {
                box.classList.add("jq-stale");
            })
            .then(function () {
                busy = false;
            });
    }

    window.setInterval(refresh, every);
    document.addEventListener("visibilitychange", function () {
        if (!document.hidden) {
            refresh();
        }
    });
}());
