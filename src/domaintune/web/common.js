// Shared by the review and results pages: JSON calls with the bearer key when the server asks for one.
async function api(path, options = {}) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = { "content-type": "application/json" };
    const key = localStorage.getItem("domaintune-key");
    if (key) headers["authorization"] = "Bearer " + key;
    const response = await fetch(path, { ...options, headers });
    if (response.status === 401 && attempt === 0) {
      const entered = window.prompt("This server needs its API key:");
      if (!entered) break;
      localStorage.setItem("domaintune-key", entered);
      continue;
    }
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    return body;
  }
  throw new Error("not authorised");
}

// Everything the model wrote goes in through textContent, never parsed as HTML: an answer is text.
function setText(id, text) { document.getElementById(id).textContent = text; }
