// Shared by the review and results pages: JSON calls with the bearer key when the server asks for one,
// and the reviewer token when the server was given a list of reviewers (otherwise a cookie carries it).
const ASKED = {
  invalid_api_key: ["domaintune-key", "This server needs its API key:"],
  invalid_reviewer_token: ["domaintune-reviewer", "Your reviewer token:"],
};

async function api(path, options = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = { "content-type": "application/json" };
    const key = localStorage.getItem("domaintune-key");
    if (key) headers["authorization"] = "Bearer " + key;
    const reviewer = localStorage.getItem("domaintune-reviewer");
    if (reviewer) headers["x-reviewer-token"] = reviewer;
    const response = await fetch(path, { ...options, headers });
    const body = await response.json();
    const asked = response.status === 401 && body.error ? ASKED[body.error.code] : undefined;
    if (asked) {
      const entered = window.prompt(asked[1]);
      if (!entered) throw new Error("not authorised");
      localStorage.setItem(asked[0], entered.trim());
      continue;
    }
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    return body;
  }
  throw new Error("not authorised");
}

// Everything the model wrote goes in through textContent, never parsed as HTML: an answer is text.
function setText(id, text) { document.getElementById(id).textContent = text; }
