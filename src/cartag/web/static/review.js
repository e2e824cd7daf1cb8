// The review grid: keyboard-driven decisions on a draft dataset version.
// Every decision is a POST to the JSON API (cookie login + the CSRF header); the card is
// updated in place from the item the API returns.
(function () {
  "use strict";

  const body = document.body;
  const ref = body.dataset.ref;
  const mode = body.dataset.mode; // "image_type" or "color"
  const csrfHeader = body.dataset.csrfHeader;
  const api = "/v1/datasets/" + encodeURIComponent(ref) + "/review";
  const cards = Array.from(document.querySelectorAll(".card"));
  const statusLine = document.getElementById("status");
  const TYPE_KEYS = { "1": "Dealer", "2": "Stock", "3": "Placeholder" };
  const COLOR_KEYS = {
    k: "Black", b: "Blue", n: "Brown", u: "Burgundy", g: "Green", e: "Grey",
    o: "Orange", i: "Pink", p: "Purple", r: "Red", w: "White", y: "Yellow",
  };
  let focused = 0;
  let colorPrefix = false; // "c" was pressed: the next letter names a color
  let busy = false;
  const history = []; // item ids decided on this page, latest last (for "u")

  function say(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  function focusCard(index) {
    if (!cards.length) return;
    focused = Math.max(0, Math.min(cards.length - 1, index));
    cards.forEach((card, i) => card.classList.toggle("focused", i === focused));
    cards[focused].focus({ preventScroll: true });
    cards[focused].scrollIntoView({ block: "nearest" });
  }

  function columns() {
    // Cards in the first row share its top offset.
    if (!cards.length) return 1;
    const top = cards[0].offsetTop;
    const n = cards.filter((card) => card.offsetTop === top).length;
    return Math.max(1, n);
  }

  function render(card, item) {
    card.querySelector(".cur-image_type").textContent = item.image_type || "—";
    card.querySelector(".cur-color").textContent = item.color || "—";
    card.querySelector(".status").textContent = item.status;
    card.querySelector(".reason").textContent = item.reason ? "(" + item.reason + ")" : "";
    const last = item.last_decision;
    card.querySelector(".decision").textContent = last ? last.action + " by " + last.user : "";
    ["included", "excluded", "flagged"].forEach((s) =>
      card.classList.toggle("status-" + s, item.status === s));
    const current = mode === "image_type" ? item.image_type : item.color;
    card.classList.toggle("disagree",
      item.model_field === mode && item.model_label !== current);
  }

  async function post(path, payload) {
    const headers = { "Content-Type": "application/json" };
    headers[csrfHeader] = "1";
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: headers,
      body: payload === undefined ? undefined : JSON.stringify(payload),
    });
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (response.status === 401) {
      window.location.href = "/review/login?next=" + encodeURIComponent(
        window.location.pathname + window.location.search);
    }
    if (!response.ok) {
      const message = data && data.error ? data.error.message : "HTTP " + response.status;
      throw new Error(message);
    }
    return data;
  }

  async function act(run) {
    if (busy || !cards.length) return;
    busy = true;
    try {
      await run();
    } catch (err) {
      say(err.message, true);
    } finally {
      busy = false;
    }
  }

  function decide(action, label) {
    const card = cards[focused];
    const itemId = Number(card.dataset.id);
    const payload = { item_id: itemId, action: action, field: mode };
    if (label) payload.label = label;
    return act(async () => {
      const result = await post(api + "/decisions", payload);
      render(card, result.item);
      history.push(itemId);
      const what = { accept: "accepted", exclude: "excluded", relabel: "relabelled " + label };
      say("item " + itemId + " " + what[action]);
      card.classList.add("decided");
      focusCard(focused + 1);
    });
  }

  function undo() {
    // The latest decision made on this page, else the focused item's latest one.
    const itemId = history.length ? history[history.length - 1] : Number(cards[focused].dataset.id);
    const index = cards.findIndex((card) => Number(card.dataset.id) === itemId);
    return act(async () => {
      const result = await post(api + "/items/" + itemId + "/undo");
      if (history.length && history[history.length - 1] === itemId) history.pop();
      if (index >= 0) {
        render(cards[index], result.item);
        focusCard(index);
      }
      say("undid " + result.decision.action + " on item " + itemId);
    });
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    if (colorPrefix) {
      colorPrefix = false;
      const color = COLOR_KEYS[key.toLowerCase()];
      if (color) {
        event.preventDefault();
        decide("relabel", color);
      } else {
        say("no color on key " + key, true);
      }
      return;
    }
    let handled = true;
    if (key === "ArrowRight" || key === "j") focusCard(focused + 1);
    else if (key === "ArrowLeft" || key === "k") focusCard(focused - 1);
    else if (key === "ArrowDown") focusCard(focused + columns());
    else if (key === "ArrowUp") focusCard(focused - columns());
    else if (key === "a") decide("accept");
    else if (key === "x") decide("exclude");
    else if (key === "u") undo();
    else if (mode === "image_type" && TYPE_KEYS[key]) decide("relabel", TYPE_KEYS[key]);
    else if (mode === "color" && key === "c") {
      colorPrefix = true;
      say("color: press its key (see the legend)");
    } else handled = false;
    if (handled) event.preventDefault();
  });

  cards.forEach((card, i) => card.addEventListener("click", () => focusCard(i)));
  focusCard(0);
})();
