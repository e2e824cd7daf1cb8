// The fix page: an advertiser's images, fixed with a click, a tap or a key.
// Each fix is a PUT to the JSON API (cookie login + the CSRF header); the card is updated
// from the answer a classify would now give. The history comes from the same API.
// Text from the server is only ever set with textContent (never parsed as HTML).
(function () {
  "use strict";

  const body = document.body;
  const advertiser = body.dataset.advertiser;
  const csrfHeader = body.dataset.csrfHeader;
  const cards = Array.from(document.querySelectorAll(".card"));
  const statusLine = document.getElementById("status");
  const historyBox = document.getElementById("history");
  const TYPE_KEYS = { "1": "Dealer", "2": "Stock", "3": "Placeholder" };
  const COLOR_KEYS = {
    k: "Black", b: "Blue", n: "Brown", u: "Burgundy", g: "Green", e: "Grey",
    o: "Orange", i: "Pink", p: "Purple", r: "Red", w: "White", y: "Yellow",
  };
  let focused = 0;
  let colorPrefix = false; // "c" was pressed: the next letter names a color
  let busy = false;

  // The stored answer of the model is "cache" in API answers: on the page, the model's.
  function source(name) {
    return name === "cache" ? "model" : name || "";
  }

  // Image keys are long hashes: enough of one to tell images apart in messages.
  function shortKey(card) {
    const key = card.dataset.key;
    return key.length > 16 ? key.slice(0, 14) + "…" : key;
  }

  function say(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  function scope() {
    const chosen = document.querySelector("input[name=scope]:checked");
    return chosen ? chosen.value : "advertiser";
  }

  function focusCard(index) {
    if (!cards.length) return;
    focused = Math.max(0, Math.min(cards.length - 1, index));
    cards.forEach((card, i) => card.classList.toggle("focused", i === focused));
    cards[focused].focus({ preventScroll: true });
    cards[focused].scrollIntoView({ block: "nearest" });
  }

  function columns() {
    if (!cards.length) return 1;
    const top = cards[0].offsetTop;
    return Math.max(1, cards.filter((card) => card.offsetTop === top).length);
  }

  function imagePath(card) {
    return "/v1/images/" + encodeURIComponent(card.dataset.key);
  }

  async function call(method, path, payload) {
    const headers = {};
    if (payload !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers[csrfHeader] = "1";
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
      window.location.href = "/fix/login?next=" + encodeURIComponent(
        window.location.pathname + window.location.search);
    }
    if (!response.ok) {
      throw new Error(data && data.error ? data.error.message : "HTTP " + response.status);
    }
    return data;
  }

  function render(card, result, audit) {
    card.querySelector(".cur-type").textContent = result.image_type || "—";
    card.querySelector(".src-type").textContent = source(result.type_source);
    card.querySelector(".cur-color").textContent = result.color || "—";
    card.querySelector(".src-color").textContent = source(result.color_source);
    const chip = card.querySelector(".chip");
    chip.className = "chip c-" + (result.color || "none");
    card.querySelectorAll(".set-type").forEach((button) =>
      button.setAttribute("aria-pressed", String(button.dataset.value === result.image_type)));
    card.classList.toggle("unsure", Boolean(result.low_confidence));
    const badge = card.querySelector(".model .badge");
    if (badge && !result.low_confidence) badge.remove();
    if (audit) {
      const what = audit.scope === "global" ? "global" : "override";
      card.querySelector(".fixed-by").textContent = "fixed by " + audit.user + " (" + what + ")";
      card.classList.add("fixed");
    }
  }

  function fix(card, change) {
    if (busy) return;
    busy = true;
    const payload = Object.assign({ advertiser_id: advertiser, scope: scope() }, change);
    const what = Object.values(change).join(", ");
    call("PUT", imagePath(card) + "/fix", payload)
      .then((data) => {
        render(card, data.result, data.audit);
        const where = payload.scope === "global" ? "globally" : "for " + advertiser;
        say("fixed " + shortKey(card) + ": " + what + " " + where);
      })
      .catch((err) => say(err.message, true))
      .finally(() => {
        busy = false;
      });
  }

  function line(list, text) {
    const item = document.createElement("li");
    item.textContent = text;
    list.appendChild(item);
  }

  function describe(entry) {
    const changes = Object.entries(entry.changes).map(([field, change]) =>
      field + " " + (change.from || "—") + " → " + (change.to || "—"));
    let text = entry.created_at.replace("T", " ").slice(0, 16) + " UTC · " + entry.user;
    if (entry.on_behalf_of) text += " for " + entry.on_behalf_of;
    text += " · " + (entry.scope === "global" ? "global" : "override " + entry.advertiser_id);
    text += " · " + changes.join("; ");
    if (entry.comment) text += " · “" + entry.comment + "”";
    return text;
  }

  function showHistory(card) {
    call("GET", imagePath(card) + "/history")
      .then((data) => {
        const model = data.model;
        const confidence = model.confidence === null ? "" : " " +
          Math.round(100 * model.confidence) + "%";
        historyBox.querySelector("#history-title").textContent = "History of " + shortKey(card);
        historyBox.querySelector(".history-model").textContent = "The model said " +
          (model.image_type || "—") + " / " + (model.color || "—") + confidence + " (" +
          (model.model_version || "?") + ")." + (data.entries.length ? "" : " No fix yet.");
        const list = historyBox.querySelector(".history-entries");
        list.replaceChildren();
        data.entries.forEach((entry) => line(list, describe(entry)));
        historyBox.hidden = false;
        historyBox.querySelector("#history-close").focus();
      })
      .catch((err) => say(err.message, true));
  }

  function closeHistory() {
    if (historyBox.hidden) return;
    historyBox.hidden = true;
    focusCard(focused);
  }

  function goTo(id) {
    const link = document.getElementById(id);
    if (link) window.location.href = link.href;
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target && (target.tagName === "SELECT" || target.tagName === "INPUT")) return;
    const key = event.key;
    if (key === "Escape") {
      closeHistory();
      return;
    }
    if (!historyBox.hidden) return;
    if (colorPrefix) {
      colorPrefix = false;
      const color = COLOR_KEYS[key.toLowerCase()];
      if (color && cards.length) {
        event.preventDefault();
        fix(cards[focused], { color: color });
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
    else if (TYPE_KEYS[key] && cards.length) fix(cards[focused], { image_type: TYPE_KEYS[key] });
    else if (key === "c" && cards.length) {
      colorPrefix = true;
      say("color: press its key (see the legend)");
    } else if (key === "h" && cards.length) showHistory(cards[focused]);
    else if (key === "g" && document.querySelector("input[name=scope]")) {
      const next = scope() === "global" ? "advertiser" : "global";
      document.querySelector("input[name=scope][value=" + next + "]").checked = true;
      say(next === "global" ? "fixes are now global (every advertiser)"
        : "fixes are now " + advertiser + "'s overrides");
    } else if (key === "n") goTo("next-page");
    else if (key === "p") goTo("prev-page");
    else handled = false;
    if (handled) event.preventDefault();
  });

  cards.forEach((card, i) => {
    card.addEventListener("click", () => focusCard(i));
    card.querySelectorAll(".set-type").forEach((button) =>
      button.addEventListener("click", (event) => {
        event.stopPropagation();
        focusCard(i);
        fix(card, { image_type: button.dataset.value });
      }));
    const select = card.querySelector(".set-color");
    select.addEventListener("change", () => {
      focusCard(i);
      if (select.value) fix(card, { color: select.value });
      select.value = "";
    });
    card.querySelector(".show-history").addEventListener("click", (event) => {
      event.stopPropagation();
      focusCard(i);
      showHistory(card);
    });
    const img = card.querySelector("img");
    if (img) {
      // No preview (the image server no longer serves it, or serves another image):
      // show the API's reason instead of a broken picture.
      img.addEventListener("error", () => {
        call("GET", img.getAttribute("src")).catch((err) => {
          const note = document.createElement("p");
          note.className = "nothumb";
          note.textContent = "No preview: " + err.message;
          img.replaceWith(note);
        });
      });
    }
  });
  document.getElementById("history-close").addEventListener("click", closeHistory);
  focusCard(0);
})();
