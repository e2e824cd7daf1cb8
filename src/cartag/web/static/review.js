// The review grid: decisions on a draft dataset version by keyboard, mouse or touch.
// Every key has a button in the toolbar (tap a card, then a button). Each decision is a
// POST to the JSON API (cookie login + the CSRF header); the card is updated in place
// from the item the API returns and, in the "undecided" view, leaves the grid (undo
// brings it back). The progress in the header is read back from the API after each one.
(function () {
  "use strict";

  const body = document.body;
  const ref = body.dataset.ref;
  const mode = body.dataset.mode; // "image_type" or "color": the queue shown
  const show = body.dataset.show; // "undecided", "decided" or "all"
  const csrfHeader = body.dataset.csrfHeader;
  const api = "/v1/datasets/" + encodeURIComponent(ref) + "/review";
  const cards = Array.from(document.querySelectorAll(".card"));
  const statusLine = document.getElementById("status");
  const progressText = document.getElementById("progress");
  const progressBar = document.getElementById("progress-bar");
  const TYPE_KEYS = { "1": "Dealer", "2": "Stock", "3": "Placeholder" };
  const COLOR_KEYS = {
    k: "Black", b: "Blue", n: "Brown", u: "Burgundy", g: "Green", e: "Grey",
    o: "Orange", i: "Pink", p: "Purple", r: "Red", w: "White", y: "Yellow",
  };
  let current = null; // the focused card
  let colorPrefix = false; // "c" was pressed: the next letter names a color
  let busy = false;
  const history = []; // item ids decided on this page, latest last (for "u")

  function say(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  function shown() {
    return cards.filter((card) => !card.hidden);
  }

  function focusCard(card) {
    if (!card) return;
    current = card;
    cards.forEach((c) => c.classList.toggle("focused", c === card));
    card.focus({ preventScroll: true });
    card.scrollIntoView({ block: "nearest" });
  }

  function move(delta) {
    const list = shown();
    if (!list.length) return;
    const at = list.indexOf(current);
    const index = at < 0 ? 0 : Math.max(0, Math.min(list.length - 1, at + delta));
    focusCard(list[index]);
  }

  function columns() {
    // Cards in the first row share its top offset.
    const list = shown();
    if (!list.length) return 1;
    const top = list[0].offsetTop;
    return Math.max(1, list.filter((card) => card.offsetTop === top).length);
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
    const label = mode === "image_type" ? item.image_type : item.color;
    card.classList.toggle("disagree", item.model_field === mode && item.model_label !== label);
  }

  function setDecided(card, decided) {
    card.dataset.decided = decided ? "1" : "0";
    card.classList.toggle("decided", decided);
  }

  async function call(method, path, payload) {
    const headers = { "Content-Type": "application/json" };
    headers[csrfHeader] = "1";
    const response = await fetch(path, {
      method: method,
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

  async function refreshProgress() {
    const p = await call("GET", api + "/progress?queue=" + encodeURIComponent(mode));
    progressText.textContent = p.done + " / " + p.total + " reviewed";
    progressText.dataset.done = p.done;
    progressText.dataset.total = p.total;
    progressBar.max = Math.max(1, p.total);
    progressBar.value = p.done;
  }

  async function act(run) {
    if (busy) return;
    busy = true;
    try {
      await run();
      await refreshProgress();
    } catch (err) {
      say(err.message, true);
    } finally {
      busy = false;
    }
  }

  function decide(action, label) {
    const card = current;
    if (!card) return;
    const itemId = Number(card.dataset.id);
    const payload = { item_id: itemId, action: action, field: mode };
    if (label) payload.label = label;
    return act(async () => {
      const result = await call("POST", api + "/decisions", payload);
      render(card, result.item);
      setDecided(card, true);
      history.push(itemId);
      const what = { accept: "accepted", exclude: "excluded", relabel: "relabelled " + label };
      const list = shown();
      const next = list[list.indexOf(card) + 1] || list[list.indexOf(card) - 1];
      if (show === "undecided") {
        card.hidden = true; // decided: it leaves the to-review queue
        say("item " + itemId + " " + what[action] + (shown().length ? "" :
          " · this page is done: n for the next page"));
        focusCard(shown().length ? next : null);
        if (!shown().length) current = null;
      } else {
        say("item " + itemId + " " + what[action]);
        focusCard(next || card);
      }
    });
  }

  function undo() {
    // The latest decision made on this page, else the focused item's latest one.
    const itemId = history.length ? history[history.length - 1] : Number(current.dataset.id);
    const card = cards.find((c) => Number(c.dataset.id) === itemId);
    return act(async () => {
      const result = await call("POST", api + "/items/" + itemId + "/undo");
      if (history.length && history[history.length - 1] === itemId) history.pop();
      if (card) {
        render(card, result.item);
        setDecided(card, result.item.decided);
        card.hidden = show === "undecided" && result.item.decided;
        if (!card.hidden) focusCard(card);
      }
      say("undid " + result.decision.action + " on item " + itemId);
    });
  }

  function goTo(id, none) {
    const link = document.getElementById(id);
    if (link) window.location.href = link.href;
    else say(none);
  }

  // One entry point for keys and buttons; "c" + a letter relabels a color.
  function handle(key) {
    if (colorPrefix) {
      colorPrefix = false;
      const color = COLOR_KEYS[key.toLowerCase()];
      if (color) decide("relabel", color);
      else say("no color on key " + key, true);
      return true;
    }
    if (key === "ArrowRight" || key === "j") move(1);
    else if (key === "ArrowLeft" || key === "k") move(-1);
    else if (key === "ArrowDown") move(columns());
    else if (key === "ArrowUp") move(-columns());
    else if (key === "a") decide("accept");
    else if (key === "x") decide("exclude");
    else if (key === "u") {
      if (current || history.length) undo();
    } else if (key === "n" || key === "PageDown") goTo("next-page", "this is the last page");
    else if (key === "p" || key === "PageUp") goTo("prev-page", "this is the first page");
    else if (mode === "image_type" && TYPE_KEYS[key]) decide("relabel", TYPE_KEYS[key]);
    else if (mode === "color" && key === "c") {
      colorPrefix = true;
      say("color: press its key (see the legend)");
    } else return false;
    return true;
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target instanceof HTMLInputElement) return;
    if (handle(event.key)) event.preventDefault();
  });

  document.querySelectorAll("#actions button").forEach((button) =>
    button.addEventListener("click", () => {
      colorPrefix = false;
      Array.from(button.dataset.key).forEach((k) => handle(k));
    }));

  cards.forEach((card) => card.addEventListener("click", () => focusCard(card)));
  const start = cards.find((card) => card.dataset.id === body.dataset.focus);
  focusCard(start || cards[0] || null);
})();
