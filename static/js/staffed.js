/* The kitchen display, live: a ticket whose order left this kitchen goes at once.
 *
 * live.js refreshes the tickets shortly after any event; an order cancelled,
 * moved or done is taken off the display the moment its event arrives, so
 * nobody keeps making a pizza that was cancelled in the oven.
 */
(function () {
  "use strict";

  var GONE = { cancelled: true, reassigned: true, done: true, failed: true, retried: true, released: true };

  document.addEventListener("pq:event", function (e) {
    var event = e.detail;
    if (!document.getElementById("kitchen") || !GONE[event.kind]) {
      return;
    }
    var ticket = document.querySelector('[data-ticket="' + event.order + '"]');
    if (ticket) {
      ticket.remove();
    }
  });
})();
