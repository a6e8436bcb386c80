/* Live updates for the tracking page, the board and the kitchen display.
 *
 * Each page names its WebSocket in data-stream and the last event id it was
 * rendered with in data-after. The stream resumes from the last id it saw, so
 * a reconnect (after a network blip or a server restart) misses nothing and
 * repeats nothing. No build step: plain ES5-ish JavaScript.
 */
(function () {
  "use strict";

  var FINAL = { done: true, failed: true, cancelled: true };

  function openStream(path, lastId, handlers) {
    var delay = 500;
    var socket = null;
    var stopped = false;

    function connect() {
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      // No last id: live events only, from now on.
      var query = lastId === null ? "" : "?after=" + lastId;
      socket = new WebSocket(scheme + location.host + path + query);
      socket.onopen = function () {
        delay = 500;
        handlers.state("live");
      };
      socket.onmessage = function (message) {
        var data = JSON.parse(message.data);
        if (data.type === "reset") {
          // Too far behind to replay: start again from the page's fresh state.
          lastId = data.id;
          (handlers.reset || function () { location.reload(); })();
          return;
        }
        if (lastId !== null && data.id <= lastId) {
          return; // already shown
        }
        lastId = data.id;
        handlers.event(data);
      };
      socket.onclose = function () {
        if (stopped) {
          return;
        }
        handlers.state("reconnecting…");
        // Exponential backoff with jitter, so a restarted server is not stampeded.
        setTimeout(connect, delay + Math.random() * delay / 2);
        delay = Math.min(delay * 2, 10000);
      };
    }

    connect();
    return {
      lastId: function () { return lastId; },
      // For tests and debugging: drop the connection and let it resume.
      drop: function () { socket.close(); },
      stop: function () { stopped = true; socket.close(); }
    };
  }

  function localTime(iso) {
    var date = new Date(iso);
    if (isNaN(date.getTime())) {
      return "";
    }
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function localiseTimes(root) {
    var nodes = root.querySelectorAll("time[data-local-time]");
    for (var i = 0; i < nodes.length; i++) {
      var text = localTime(nodes[i].getAttribute("datetime"));
      if (text) {
        nodes[i].textContent = text;
      }
    }
  }

  function stateShower(element) {
    return function (state) {
      if (element) {
        element.textContent = state === "live" ? "● live" : state;
        element.className = "live-state " + (state === "live" ? "is-live" : "is-down");
      }
    };
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  // Other scripts (redirect.js, staffed.js) follow the same stream through this DOM event.
  function announce(event) {
    document.dispatchEvent(new CustomEvent("pq:event", { detail: event }));
  }

  function timeElement(iso) {
    var time = element("time", "", localTime(iso));
    time.setAttribute("datetime", iso);
    return time;
  }

  // --- The customer's tracking page ------------------------------------------

  function trackOrder(root) {
    var status = document.getElementById("status");
    var card = document.getElementById("status-card");
    var bar = document.getElementById("progress");
    var timeline = document.getElementById("timeline");
    var cancel = document.getElementById("cancel-form");
    var stream = openStream(root.dataset.stream, Number(root.dataset.after || 0), {
      state: stateShower(document.getElementById("live-state")),
      event: function (event) {
        if (event.status) {
          status.textContent = event.status_label;
          card.dataset.status = event.status;
          if (cancel) {
            // Cancelling stays possible until the oven, and again once a moved order is back in the queue.
            cancel.hidden = !event.may_cancel;
          }
        }
        if (event.progress !== null) {
          bar.value = event.progress;
          bar.textContent = event.progress + " %";
        }
        if (event.public && !repeatsLast(timeline, event)) {
          var item = element("li", "event-" + event.kind);
          item.dataset.id = event.id;
          if (event.to_shop !== null && event.to_shop !== undefined) {
            item.dataset.toShop = event.to_shop;
          }
          item.appendChild(timeElement(event.created_at));
          item.appendChild(document.createTextNode(" "));
          item.appendChild(element("span", "text", event.text));
          timeline.appendChild(item);
        }
        if (event.promised_at) {
          revisePromise(event.promised_at);
        }
        if (FINAL[event.status]) {
          var handover = document.getElementById("handover");
          var step = "";
          if (event.status === "done") {
            // Where the made order is now: the event's hand-over step, or (the kitchen's
            // `done`) where this order waits, which the page was rendered with.
            var ready = event.ready_lines ? event.ready_lines[root.dataset.kind] : null;
            handover.textContent = event.handover_line || ready || root.dataset.ready;
            handover.hidden = false;
            step = event.handover || (event.kind === "done" && root.dataset.kind === "delivery" ? "shelf" : "");
          } else {
            handover.hidden = true;
          }
          // The promise is the customer's door for a delivery order on its way; otherwise it is
          // history once the order is made or stopped: no "Promised by", no "late".
          if (step !== "shelf" && step !== "out") {
            ["promise-line", "late"].forEach(function (id) {
              var gone = document.getElementById(id);
              if (gone) {
                gone.remove();
              }
            });
          }
        }
        announce(event);
      }
    });
    window.pizzaqueue.stream = stream;
    // Tell the customer once the promised time has passed (the page's clock, checked every second).
    setInterval(function () {
      var promise = document.getElementById("promise");
      var late = document.getElementById("late");
      if (promise && late && late.hidden && Date.now() > Date.parse(promise.getAttribute("datetime"))) {
        late.hidden = false;
      }
    }, 1000);
  }

  // A revised promise (the keeper told the customer on the timeline): "Promised by" follows it,
  // and "running late" waits for the new time to pass.
  function revisePromise(iso) {
    var promise = document.getElementById("promise");
    var late = document.getElementById("late");
    var line = document.getElementById("promise-line");
    if (!promise) {
      return;
    }
    promise.setAttribute("datetime", iso);
    promise.textContent = localTime(iso);
    if (late) {
      late.hidden = Date.now() <= Date.parse(iso);
    }
    if (line) {
      line.dataset.late = late && !late.hidden ? "true" : "false";
      line.dataset.revised = "true";
    }
  }

  // The same move told twice in a row (its queue's, then its kitchen's hand-back) is one line.
  function repeatsLast(timeline, event) {
    var last = timeline.lastElementChild;
    return event.kind === "reassigned" && last !== null && last.className === "event-reassigned" &&
      (last.dataset.toShop || "") === (event.to_shop || "");
  }

  // --- The operations board --------------------------------------------------

  function board(list) {
    var stream = openStream(list.dataset.stream, Number(list.dataset.after || 0), {
      state: stateShower(document.getElementById("live-state")),
      event: function (event) {
        var item = element("li", "kind-" + event.kind);
        item.dataset.id = event.id;
        item.appendChild(timeElement(event.created_at));
        item.appendChild(document.createTextNode(" "));
        item.appendChild(element("span", "kind", event.kind_label + (event.stage ? " " + event.stage : "")));
        item.appendChild(document.createTextNode(" "));
        var link = element("a", "", "#" + event.order.slice(0, 8));
        link.href = "/orders/" + event.order + "/";
        item.appendChild(link);
        if (event.worker) {
          item.appendChild(document.createTextNode(" "));
          item.appendChild(element("span", "who", event.worker));
        }
        item.appendChild(document.createTextNode(" "));
        item.appendChild(element("span", "text", event.staff_text || event.text));
        list.insertBefore(item, list.firstChild);
        while (list.children.length > 50) {
          list.removeChild(list.lastChild);
        }
      }
    });
    window.pizzaqueue.stream = stream;
  }

  // --- The kitchen display ---------------------------------------------------

  function formatAge(seconds) {
    var minutes = Math.floor(seconds / 60);
    var rest = Math.floor(seconds % 60);
    return minutes + ":" + (rest < 10 ? "0" : "") + rest;
  }

  function tickTimers() {
    var tickets = document.querySelectorAll("[data-ticket]");
    var now = Date.now();
    for (var i = 0; i < tickets.length; i++) {
      var ticket = tickets[i];
      var age = Math.max(0, (now - Date.parse(ticket.dataset.since)) / 1000);
      var promise = Number(ticket.dataset.promise) || 1;
      var share = age / promise;
      ticket.querySelector("[data-timer]").textContent = formatAge(age);
      ticket.classList.toggle("age-fresh", share < 0.5);
      ticket.classList.toggle("age-warm", share >= 0.5 && share < 1);
      ticket.classList.toggle("age-late", share >= 1);
    }
  }

  function kitchen(root) {
    var pending = null;
    function refresh() {
      // Any change may concern this kitchen's tickets; refresh them at most every 300 ms.
      if (pending === null) {
        pending = setTimeout(function () {
          pending = null;
          if (window.htmx) {
            window.htmx.trigger(document.body, "pq:refresh");
          }
        }, 300);
      }
    }
    var stream = openStream(root.dataset.stream, null, {
      state: stateShower(document.getElementById("live-state")),
      event: function (event) {
        announce(event);
        refresh();
      },
      reset: refresh
    });
    tickTimers();
    setInterval(tickTimers, 1000);
    document.body.addEventListener("htmx:afterSwap", tickTimers);
    window.pizzaqueue.stream = stream;
  }

  // --- The order form ---------------------------------------------------------

  // Show each field only for the kind of order it belongs to (an address for a delivery, the
  // shop to collect from for a takeaway); without JavaScript every field shows, and the server
  // leaves out what belongs to the other kind.
  function orderForm(form) {
    function show() {
      var checked = form.querySelector("input[name=kind]:checked");
      var kind = checked ? checked.value : "delivery";
      var fields = form.querySelectorAll("[data-for-kind]");
      for (var i = 0; i < fields.length; i++) {
        fields[i].hidden = fields[i].dataset.forKind !== kind;
      }
    }
    form.addEventListener("change", show);
    show();
  }

  window.pizzaqueue = {};

  document.addEventListener("DOMContentLoaded", function () {
    localiseTimes(document);
    var orderFormRoot = document.querySelector("form.order-form");
    if (orderFormRoot) {
      orderForm(orderFormRoot);
    }
    var tracking = document.getElementById("tracking");
    var events = document.getElementById("events");
    var kitchenRoot = document.getElementById("kitchen");
    if (tracking) {
      trackOrder(tracking);
    } else if (events) {
      board(events);
    } else if (kitchenRoot) {
      kitchen(kitchenRoot);
    }
  });
})();
