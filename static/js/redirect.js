/* Client redirection on the tracking page (SPEC §7b), live.
 *
 * live.js announces every event of the order's stream as a "pq:event" DOM
 * event. A delivery order that moved to another shop says which one at the top
 * of the page; a takeaway order cancelled because its shop closed fetches the
 * offer to order the same at an open shop (a plain form: one click).
 */
(function () {
  "use strict";

  document.addEventListener("pq:event", function (e) {
    var event = e.detail;
    var moved = document.getElementById("moved");
    if (moved && event.to_shop !== null && event.to_shop !== undefined) {
      moved.textContent = event.text;
      moved.hidden = false;
    }
    var offer = document.getElementById("reorder");
    if (offer && event.shop_unavailable) {
      fetch(offer.dataset.offer, { credentials: "same-origin", headers: { "HX-Request": "true" } })
        .then(function (response) { return response.ok ? response.text() : ""; })
        .then(function (html) {
          offer.innerHTML = html;
          if (window.htmx) {
            window.htmx.process(offer);
          }
        });
    }
  });
})();
