/* The kitchen display, live: a ticket whose order left this kitchen goes at once.
 *
 * live.js refreshes the tickets shortly after any event; an order cancelled,
 * moved or done is taken off the display the moment its event arrives, so
 * nobody keeps making a pizza that was cancelled in the oven.
 */
(function () {
  "use strict";

  // The kitchen's stream names this kitchen's orders that just left it (`gone`).
  document.addEventListener("pq:event", function (e) {
    var gone = e.detail.gone || [];
    if (!document.getElementById("kitchen")) {
      return;
    }
    for (var i = 0; i < gone.length; i++) {
      var ticket = document.querySelector('[data-ticket="' + gone[i] + '"]');
      if (ticket) {
        ticket.remove();
      }
    }
  });
})();
