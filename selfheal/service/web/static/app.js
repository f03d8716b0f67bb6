// selfheal incident review: the token panel, approve / deny, and the chat stream reader.
//
// The token is kept in this tab's sessionStorage and sent as a Bearer header on mutating calls only (why:
// selfheal/service/web/__init__.py). Everything from the server that is text goes in with textContent;
// the only markup inserted is the chat answer's `html`, which the server rendered with raw HTML disabled.
"use strict";

const TOKEN_KEY = "selfheal.token";
const ACTOR_KEY = "selfheal.actor";

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function actor() { return sessionStorage.getItem(ACTOR_KEY) || ""; }

function authHeaders() {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (actor()) headers["X-Selfheal-Actor"] = actor();
  return headers;
}

function showTokenState() {
  const state = document.getElementById("token-state");
  if (state) state.textContent = token() ? "token kept for this tab" + (actor() ? " as " + actor() : "") : "no token";
}

function setupTokenPanel() {
  const form = document.getElementById("token-panel");
  if (!form) return;
  const actorInput = document.getElementById("actor");
  actorInput.value = actor();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const tokenInput = document.getElementById("token");
    if (tokenInput.value.trim()) sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
    if (actorInput.value.trim()) sessionStorage.setItem(ACTOR_KEY, actorInput.value.trim());
    tokenInput.value = "";  // not left in the form: the storage holds it
    showTokenState();
  });
  document.getElementById("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
  });
  showTokenState();
}

async function errorText(response) {
  try {
    const body = await response.json();
    return response.status + ": " + (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
  } catch (_) {
    return response.status + ": " + response.statusText;
  }
}

function setupDecisions() {
  for (const form of document.querySelectorAll("form.decision")) {
    const result = form.querySelector("output");
    for (const button of form.querySelectorAll("button[data-decision]")) {
      button.addEventListener("click", async () => {
        const decision = button.dataset.decision;
        const incident = form.dataset.incident;
        result.classList.remove("error");
        if (!token()) {
          result.classList.add("error");
          result.textContent = "Paste the service token above first (it is in the workspace's service-token file).";
          return;
        }
        for (const b of form.querySelectorAll("button")) b.disabled = true;
        result.textContent = decision === "approve" ? "approving…" : "denying…";
        const body = { note: form.elements.note.value };
        if (form.dataset.request) body.request = form.dataset.request;  // an action asked for in chat
        const response = await fetch("/v1/incidents/" + encodeURIComponent(incident) + "/" + decision, {
          method: "POST", headers: authHeaders(), body: JSON.stringify(body),
        });
        if (!response.ok) {
          result.classList.add("error");
          result.textContent = await errorText(response);
          for (const b of form.querySelectorAll("button")) b.disabled = false;
          return;
        }
        const run = await response.json();
        result.textContent = run.request
          ? (decision === "approve" ? "approved" : "denied") + ": " + run.action + " " + run.status
          : (decision === "approve" ? "approved" : "denied") + ": " + run.thread_id + " is " + run.status + (run.outcome ? " (" + run.outcome + ")" : "");
        setTimeout(() => window.location.reload(), 600);  // the page shows the resumed run's record
      });
    }
  }
}

// One server-sent event frame ("event: x\ndata: {...}") -> {name, data}; comments give null.
function parseFrame(frame) {
  let name = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith(":")) continue;
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return null;
  return { name, data: JSON.parse(data.join("\n")) };
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showReplyMeta(turn, reply) {
  const meta = element("p", "meta");
  meta.textContent = "answered by " + reply.mode + (reply.intent ? " (" + reply.intent + ")" : "") +
    (reply.sources && reply.sources.length ? " · sources: " + reply.sources.join(", ") : "");
  turn.appendChild(meta);
}

async function ask(form) {
  const log = document.getElementById("chat-log");
  const textarea = form.elements.message;
  const message = textarea.value.trim();
  if (!message) return;
  const turn = element("div", "turn");
  const question = element("p", "question");
  question.appendChild(element("strong", null, (actor() || "you") + ": "));
  question.appendChild(document.createTextNode(message));
  const answer = element("div", "answer streaming");
  turn.append(question, answer);
  log.appendChild(turn);
  if (!token()) {
    answer.classList.add("error");
    answer.textContent = "Paste the service token above first (it is in the workspace's service-token file).";
    return;
  }
  const button = form.querySelector("button");
  button.disabled = true;
  textarea.value = "";
  try {
    const response = await fetch("/v1/incidents/" + encodeURIComponent(form.dataset.incident) + "/chat/stream", {
      method: "POST", headers: { ...authHeaders(), Accept: "text/event-stream" }, body: JSON.stringify({ message }),
    });
    if (!response.ok) {
      answer.classList.add("error");
      answer.textContent = await errorText(response);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const parsed = parseFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (!parsed) continue;
        if (parsed.name === "start") answer.textContent = "…";
        else if (parsed.name === "delta") {
          if (answer.textContent === "…") answer.textContent = "";
          answer.textContent += parsed.data.text;
        } else if (parsed.name === "done") {
          answer.classList.remove("streaming");
          answer.innerHTML = parsed.data.html;  // rendered by the server with raw HTML disabled
          turn.dataset.mode = parsed.data.mode;
          showReplyMeta(turn, parsed.data);
        } else if (parsed.name === "error") {
          answer.classList.add("error");
          answer.textContent = parsed.data.status + ": " + parsed.data.detail;
        }
      }
    }
  } catch (error) {
    answer.classList.add("error");
    answer.textContent = "the request failed: " + error;
  } finally {
    button.disabled = false;
  }
}

function setupChat() {
  const form = document.getElementById("chat-form");
  if (!form) return;
  form.addEventListener("submit", (event) => { event.preventDefault(); ask(form); });
  form.elements.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); ask(form); }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupTokenPanel();
  setupDecisions();
  setupChat();
});
