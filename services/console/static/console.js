// The swarm console's only script: live sections over server-sent events, the token
// (kept in this tab's sessionStorage, sent as an Authorization header), and the buttons.
(() => {
  "use strict";
  const body = document.body;
  const KEY = "swarm-console-token";
  const token = () => sessionStorage.getItem(KEY) || "";

  const flash = (message, ok) => {
    const el = document.getElementById("flash");
    el.textContent = message;
    el.className = ok ? "ok" : "error";
  };

  const form = document.getElementById("token-form");
  if (form) {
    const input = document.getElementById("token");
    const state = document.getElementById("token-state");
    const show = () => { state.textContent = token() ? "token set for this tab" : ""; };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, input.value.trim());
      input.value = "";
      show();
    });
    show();
  }

  // Delegated: live updates replace the buttons.
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.action");
    if (!button) return;
    event.preventDefault();
    button.disabled = true;
    const headers = token() ? { Authorization: "Bearer " + token() } : {};
    try {
      const reply = await fetch(button.dataset.action, { method: "POST", headers });
      const answer = await reply.json();
      flash(answer.message, answer.ok);
      if (answer.ok && button.classList.contains("replay")) {
        button.closest("tr").classList.add("replayed");
        return;
      }
    } catch (err) {
      flash("The console did not answer: " + err, false);
    }
    button.disabled = false;
  });

  const url = body.dataset.events;
  if (url) {
    const live = document.getElementById("live");
    const source = new EventSource(url);
    source.onmessage = (event) => {
      const sections = JSON.parse(event.data).sections;
      for (const [id, html] of Object.entries(sections)) {
        const el = document.getElementById(id);
        if (el) el.innerHTML = html;
      }
      live.textContent = "live · " + new Date().toLocaleTimeString();
      live.className = "live on";
    };
    source.onerror = () => {
      live.textContent = "reconnecting…";
      live.className = "live off";
    };
  }
})();
