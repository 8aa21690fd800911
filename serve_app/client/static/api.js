// Talking to the Sastre API: one fetch wrapper that turns every refusal into a sentence a person can read.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const FIELD_NAMES = {
  family_id: "fabric", color_id: "color", cuts: "cuts", seed: "seed", swatch_url: "swatch photo",
  file: "file", hex_value: "hex color", swatch_code: "swatch code", display_name: "name",
};

// `detail` is a string, or FastAPI's list of validation errors ({loc, msg}): plain words either way.
export function plainWords(detail, status) {
  if (typeof detail === "string" && detail) return sentence(detail);
  if (Array.isArray(detail) && detail.length) {
    return detail.map((item) => {
      if (typeof item === "string") return sentence(item);
      const loc = (item.loc || []).filter((part) => part !== "body" && part !== "query" && typeof part === "string");
      const field = loc.length ? FIELD_NAMES[loc[loc.length - 1]] || loc[loc.length - 1].replaceAll("_", " ") : "";
      const msg = (item.msg || "is not valid").replace(/^Value error, /, "");
      return sentence(field ? `${field}: ${msg}` : msg);
    }).join(" ");
  }
  return fallbackMessage(status);
}

function sentence(text) {
  const trimmed = String(text).trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

function fallbackMessage(status) {
  if (status === 401) return "Please log in again.";
  if (status === 404) return "Not found.";
  if (status === 413) return "That file is too large.";
  if (status === 429) return "Too many requests; wait a moment and try again.";
  if (status >= 500) return "The service is having trouble; try again shortly.";
  return `The request was refused (HTTP ${status}).`;
}

// fetch + JSON; throws ApiError with a readable message on any non-2xx answer or lost connection.
export async function api(path, { method = "GET", json, form, body, token, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "The service cannot be reached; check your connection and try again.");
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    let message = plainWords(data && data.detail, response.status);
    const retry = response.headers.get("Retry-After");
    if ((response.status === 429 || response.status === 503) && retry) message += ` Try again in ${retry} s.`;
    throw new ApiError(response.status, message);
  }
  return data;
}
