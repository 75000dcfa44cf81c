// FluxChat web app: live updates from the node's event stream (server-sent events).
// Pages are complete without this script; it only keeps an open page current.
"use strict";

(function () {
  const peer = document.body.dataset.peer;
  let thread = document.getElementById("thread");

  async function appendMail(uuid) {
    if (thread.querySelector(`[data-uuid="${CSS.escape(uuid)}"]`)) return;
    // The server renders (and escapes) the mail; reading it marks it read.
    const response = await fetch(`/m/${encodeURIComponent(uuid)}`, {credentials: "same-origin"});
    if (!response.ok) return;
    const html = await response.text();
    if (thread.querySelector(`[data-uuid="${CSS.escape(uuid)}"]`)) return;   // a catch-up drew it meanwhile
    const empty = thread.querySelector(".empty");
    if (empty) empty.remove();
    thread.insertAdjacentHTML("beforeend", html);
    const reply = document.querySelector("#reply input[name=ref]");
    if (reply) reply.value = uuid;
    thread.lastElementChild.scrollIntoView({block: "end"});
  }

  function bumpUnread(event) {
    const row = document.querySelector(`#conversations tr[data-peer="${CSS.escape(event.peer)}"]`);
    if (!row) { window.location.reload(); return; }   // a new conversation: redraw the list
    const cell = row.querySelector(".unread");
    cell.textContent = String((parseInt(cell.textContent, 10) || 0) + 1);
    row.parentNode.prepend(row);
  }

  function handle(event) {
    if (event.type === "mail" || (event.type === "state" && event.state === "queued")) {
      if (thread && event.peer === peer) appendMail(event.uuid);
      else if (event.type === "mail" && document.getElementById("conversations")) bumpUnread(event);
    }
    if (event.type === "state") {
      for (const cell of document.querySelectorAll(`[data-state-for="${CSS.escape(event.uuid)}"]`)) {
        cell.textContent = event.state;
      }
    }
    if (event.type === "link") {
      const count = document.getElementById("link-count");
      if (count) count.textContent = String(event.links);
    }
  }

  // Whatever changed between drawing the page and subscribing (or while the stream was down)
  // is caught up by redrawing the live parts of the page; forms are left alone.
  async function catchUp() {
    const response = await fetch(window.location.pathname, {credentials: "same-origin"});
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const selector of ["#thread", "#conversations", "table.list", "#link-count"]) {
      const old = document.querySelector(selector), now = fresh.querySelector(selector);
      if (old && now) old.replaceWith(document.adoptNode(now));
    }
    thread = document.getElementById("thread");
    const last = thread && thread.lastElementChild;
    const reply = document.querySelector("#reply input[name=ref]");
    if (reply && last && last.dataset.uuid) reply.value = last.dataset.uuid;
  }

  const source = new EventSource("/events");
  source.onopen = () => catchUp();
  source.onmessage = (message) => handle(JSON.parse(message.data));
})();
