// The admin page: log in, manage fabrics and colors (with swatch photos), browse the generation history
// with filters and retry failed jobs.

import { api } from "./api.js";
import { announcer, field, h, uid } from "./dom.js";
import { watchJob } from "./jobwatch.js";

const $ = (id) => document.getElementById(id);
const notice = announcer($("notice"));
const TOKEN_KEY = "sastre-admin-token";
const STATUSES = ["pending", "processing", "completed", "failed", "canceled", "expired"];
const IMAGE_TYPES = new Set(["image/jpeg", "image/png", "image/webp"]);
const MAX_UPLOAD_BYTES = 5 * 1024 * 1024;
const PAGE_SIZE = 20;
let families = [];
let historyCursor = null;
// Counts fresh history loads: an answer to an older one (slower, or overtaken by a new search) is dropped.
let historySearch = 0;

// -- session ------------------------------------------------------------------------------------------
const token = () => sessionStorage.getItem(TOKEN_KEY);

async function adminApi(path, options = {}) {
  try {
    return await api(path, { ...options, token: token() });
  } catch (error) {
    if (error.status === 401) {
      logOut("Your session has ended; please log in again.");
    }
    throw error;
  }
}

function showApp(loggedIn) {
  $("login-section").hidden = loggedIn;
  $("admin-app").hidden = !loggedIn;
  $("logout").hidden = !loggedIn;
}

function logOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  showApp(false);
  if (message) notice.error(message);
  else notice.clear();
  $("username").focus();
}

async function logIn(event) {
  event.preventDefault();
  notice.clear();
  const body = new URLSearchParams({ username: $("username").value, password: $("password").value });
  try {
    const answer = await api("/admin/login", { method: "POST", body });
    sessionStorage.setItem(TOKEN_KEY, answer.access_token);
  } catch (error) {
    notice.error(error.status === 401 ? "Wrong username or password." : `Could not log in: ${error.message}`);
    return;
  }
  $("password").value = "";
  await start();
}

async function start() {
  showApp(true);
  buildHistoryFilters();
  // Both at once, so the first history load is always older than any search the admin starts.
  await Promise.all([loadFamilies(), loadHistory(true)]);
}

// -- fabrics and colors -------------------------------------------------------------------------------
const slug = (text) => text.normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase()
  .replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 64);

function statusSelect(value) {
  const select = h("select", { name: "status" },
    ...["active", "inactive"].map((s) => h("option", { value: s, selected: s === value }, s)));
  return [select, field("Status", select, { narrow: true })];
}

async function loadFamilies() {
  try {
    families = await adminApi("/admin/fabrics");
  } catch (error) {
    if (error.status !== 401) notice.error(`The catalog could not be loaded: ${error.message}`);
    return;
  }
  buildNewFabricForm();
  const open = new Set([...document.querySelectorAll("details.family[open]")].map((d) => d.dataset.family));
  $("families").replaceChildren(...families.map((family) => familyPanel(family, open.has(family.family_id))));
  refreshFamilyFilter();
}

function buildNewFabricForm() {
  const form = $("new-fabric");
  const name = h("input", { type: "text", name: "display_name", required: true, maxlength: 200 });
  const id = h("input", { type: "text", name: "family_id", pattern: "[a-z0-9][a-z0-9-]{0,63}", placeholder: "from the name" });
  const collection = h("input", { type: "text", name: "collection", placeholder: "the catalog's" });
  const fabric = h("input", { type: "text", name: "fabric", placeholder: "e.g. Donegal tweed", required: true });
  form.replaceChildren(...[
    h("h3", { class: "sub", style: "flex-basis:100%" }, "Add a fabric"),
    field("Fabric name", name),
    field("Fabric id (optional)", id),
    field("Collection (optional)", collection),
    field("Fabric in English, for the prompt", fabric),
    h("button", { type: "submit", class: "button primary" }, "Add fabric")]);
  form.onsubmit = async (event) => {
    event.preventDefault();
    notice.clear();
    const body = { family_id: id.value.trim() || slug(name.value), display_name: name.value.trim() };
    if (collection.value.trim()) body.collection = collection.value.trim();
    body.fabric = fabric.value.trim();
    try {
      await adminApi("/admin/fabrics", { method: "POST", json: body });
    } catch (error) {
      notice.error(`The fabric was not added: ${error.message}`);
      return;
    }
    notice.info(`Fabric “${body.display_name}” added.`);
    await loadFamilies();
    document.querySelector(`details.family[data-family="${CSS.escape(body.family_id)}"]`)?.setAttribute("open", "");
  };
}

function familyPanel(family, open) {
  const name = h("input", { type: "text", name: "display_name", value: family.display_name, required: true });
  const [status, statusField] = statusSelect(family.status);
  const fabric = h("input", { type: "text", name: "fabric", value: family.fabric, required: true });
  const editForm = h("form", { class: "form-row", "aria-label": `Edit ${family.display_name}` },
    field("Fabric name", name),
    field("Fabric in English, for the prompt", fabric),
    statusField,
    h("div", { class: "row-actions" },
      h("button", { type: "submit", class: "button" }, "Save fabric"),
      h("button", { type: "button", class: "button danger", onclick: () => deleteFamily(family) }, "Delete fabric")));
  editForm.onsubmit = async (event) => {
    event.preventDefault();
    const patch = {};
    if (name.value.trim() !== family.display_name) patch.display_name = name.value.trim();
    if (status.value !== family.status) patch.status = status.value;
    if (fabric.value.trim() !== family.fabric) patch.fabric = fabric.value.trim();
    await save(`/admin/fabrics/${encodeURIComponent(family.family_id)}`, patch, `Fabric “${family.display_name}” saved.`);
  };
  return h("details", { class: "family", open, dataset: { family: family.family_id } },
    h("summary", {}, family.display_name,
      h("span", { class: "status-pill", dataset: { status: family.status } }, family.status),
      h("span", { class: "hint" }, `${family.family_id} · ${family.collection || ""} · ${family.colors.length} colors`)),
    h("div", { class: "family-body" },
      editForm,
      h("h3", { class: "sub" }, "Colors"),
      ...family.colors.map((color) => colorRow(color)),
      newColorForm(family)));
}

function colorRow(color) {
  const name = h("input", { type: "text", name: "name", value: color.name, required: true });
  const hex = h("input", { type: "color", name: "hex_value", value: color.hex_value.toLowerCase() });
  const code = h("input", { type: "text", name: "swatch_code", value: color.swatch_code || "", size: 10 });
  const english = h("input", { type: "text", name: "english", value: color.english, required: true });
  const [status, statusField] = statusSelect(color.status);
  const file = h("input", { type: "file", accept: "image/jpeg,image/png,image/webp", class: "visually-hidden-input" });
  file.id = uid("swatch");
  const thumb = color.swatch_url
    ? h("img", { src: color.swatch_url, alt: `${color.name} swatch`, class: "swatch-thumb", width: 56, height: 56 })
    : h("span", { class: "swatch-thumb", style: `background:${color.hex_value}`, role: "img", "aria-label": `${color.name} (no swatch)` });
  const form = h("form", { class: "color-row", dataset: { color: color.color_id }, "aria-label": `Color ${color.name}` },
    thumb,
    field("Name", name, { hint: color.color_id }),
    field("Hex", hex, { narrow: true }),
    field("Swatch code", code),
    field("Color in English, for the prompt", english),
    statusField,
    h("div", { class: "row-actions" },
      h("button", { type: "submit", class: "button" }, "Save"),
      file, h("label", { for: file.id, class: "button secondary" }, "Upload swatch…"),
      h("button", { type: "button", class: "button danger", onclick: () => deleteColor(color) }, "Delete")));
  form.onsubmit = async (event) => {
    event.preventDefault();
    const patch = {};
    if (name.value.trim() !== color.name) patch.name = name.value.trim();
    if (hex.value.toLowerCase() !== color.hex_value.toLowerCase()) patch.hex_value = hex.value.toUpperCase();
    if (code.value.trim() !== (color.swatch_code || "")) patch.swatch_code = code.value.trim() || null;
    if (english.value.trim() !== color.english) patch.english = english.value.trim();
    if (status.value !== color.status) patch.status = status.value;
    await save(`/admin/colors/${encodeURIComponent(color.color_id)}`, patch, `Color “${color.name}” saved.`);
  };
  file.addEventListener("change", () => file.files.length && uploadColorSwatch(color, file.files[0]));
  return form;
}

function newColorForm(family) {
  const name = h("input", { type: "text", name: "name", required: true, maxlength: 100 });
  const id = h("input", { type: "text", name: "color_id", pattern: "[a-z0-9][a-z0-9-]{0,63}", placeholder: "from the name" });
  const hex = h("input", { type: "color", name: "hex_value", value: "#777777" });
  const code = h("input", { type: "text", name: "swatch_code", size: 10 });
  const english = h("input", { type: "text", name: "english", placeholder: "e.g. navy blue", required: true });
  const form = h("form", { class: "form-row", "aria-label": `Add a color to ${family.display_name}` },
    h("h3", { class: "sub", style: "flex-basis:100%" }, `Add a color to ${family.display_name}`),
    field("Color name", name),
    field("Color id (optional)", id),
    field("Hex", hex, { narrow: true }),
    field("Swatch code (optional)", code),
    field("Color in English, for the prompt", english),
    h("button", { type: "submit", class: "button primary" }, "Add color"));
  form.onsubmit = async (event) => {
    event.preventDefault();
    notice.clear();
    const body = {
      color_id: id.value.trim() || slug(`${family.family_id}-${name.value}`),
      name: name.value.trim(), hex_value: hex.value.toUpperCase(), english: english.value.trim(),
    };
    if (code.value.trim()) body.swatch_code = code.value.trim();
    try {
      await adminApi(`/admin/fabrics/${encodeURIComponent(family.family_id)}/colors`, { method: "POST", json: body });
    } catch (error) {
      notice.error(`The color was not added: ${error.message}`);
      return;
    }
    notice.info(`Color “${body.name}” added to ${family.display_name}.`);
    await loadFamilies();
  };
  return form;
}

async function save(path, patch, done) {
  notice.clear();
  if (!Object.keys(patch).length) { notice.info("Nothing changed."); return; }
  try {
    await adminApi(path, { method: "PATCH", json: patch });
  } catch (error) {
    notice.error(`Not saved: ${error.message}`);
    return;
  }
  notice.info(done);
  await loadFamilies();
}

async function deleteFamily(family) {
  if (!confirm(`Delete the fabric “${family.display_name}” and its ${family.colors.length} colors? Past jobs keep their history.`)) return;
  await remove(`/admin/fabrics/${encodeURIComponent(family.family_id)}`, `Fabric “${family.display_name}” deleted.`);
}

async function deleteColor(color) {
  if (!confirm(`Delete the color “${color.name}”?`)) return;
  await remove(`/admin/colors/${encodeURIComponent(color.color_id)}`, `Color “${color.name}” deleted.`);
}

async function remove(path, done) {
  notice.clear();
  try {
    await adminApi(path, { method: "DELETE" });
  } catch (error) {
    notice.error(`Not deleted: ${error.message}`);
    return;
  }
  notice.info(done);
  await loadFamilies();
}

async function uploadColorSwatch(color, file) {
  notice.clear();
  if (!IMAGE_TYPES.has(file.type)) { notice.error(`“${file.name}” is not a JPEG, PNG or WebP photo.`); return; }
  if (file.size > MAX_UPLOAD_BYTES) { notice.error(`“${file.name}” is larger than 5 MB.`); return; }
  const form = new FormData();
  form.append("file", file);
  try {
    await adminApi(`/admin/colors/${encodeURIComponent(color.color_id)}/swatch`, { method: "PUT", form });
  } catch (error) {
    notice.error(error.status === 404 || error.status === 405
      ? "This server cannot take swatch photos for colors yet."
      : `The swatch photo was refused: ${error.message}`);
    return;
  }
  notice.info(`New swatch photo for “${color.name}” saved.`);
  await loadFamilies();
}

// -- generation history -------------------------------------------------------------------------------
function buildHistoryFilters() {
  const form = $("history-filters");
  if (form.childElementCount) return;
  const status = h("select", { name: "status" }, h("option", { value: "" }, "any"),
    ...STATUSES.map((s) => h("option", { value: s }, s)));
  const family = h("select", { name: "family_id", id: "filter-family" }, h("option", { value: "" }, "any"));
  const color = h("input", { type: "text", name: "color_id", placeholder: "e.g. lino-arena" });
  const from = h("input", { type: "datetime-local", name: "created_from" });
  const to = h("input", { type: "datetime-local", name: "created_to" });
  form.replaceChildren(field("Status", status), field("Fabric", family), field("Color id", color),
    field("Created from", from), field("Created until", to),
    h("button", { type: "submit", class: "button" }, "Show jobs"));
  form.onsubmit = (event) => { event.preventDefault(); loadHistory(true); };
  $("history-more").onclick = () => loadHistory(false);
}

function refreshFamilyFilter() {
  const select = $("filter-family");
  if (!select) return;
  const current = select.value;
  select.replaceChildren(h("option", { value: "" }, "any"),
    ...families.map((f) => h("option", { value: f.family_id, selected: f.family_id === current }, f.display_name)));
}

function historyQuery() {
  const form = $("history-filters");
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  for (const name of ["status", "family_id", "color_id"]) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  for (const name of ["created_from", "created_to"]) {
    const value = form.elements[name].value;
    if (value) params.set(name, new Date(value).toISOString());
  }
  if (historyCursor) params.set("cursor", historyCursor);
  return params;
}

async function loadHistory(fresh) {
  if (fresh) {
    historyCursor = null;
    historySearch += 1;
  }
  const search = historySearch;
  let page;
  try {
    page = await adminApi(`/admin/generations?${historyQuery()}`);
  } catch (error) {
    if (error.status !== 401 && search === historySearch) notice.error(`The history could not be loaded: ${error.message}`);
    return;
  }
  if (search !== historySearch) return;
  historyCursor = page.next_cursor;
  $("history-more").hidden = !historyCursor;
  let table = $("history-list").querySelector("table");
  if (fresh || !table) {
    table = h("table", { class: "history" },
      h("caption", { class: "visually-hidden" }, "Generation jobs, newest first"),
      h("thead", {}, h("tr", {}, ...["Created", "Job", "Fabric and color", "Cuts", "Status", "Result", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody"));
    $("history-list").replaceChildren(table);
  }
  const body = table.querySelector("tbody");
  body.append(...page.items.map(historyRow));
  if (!body.childElementCount) $("history-list").replaceChildren(h("p", {}, "No jobs match these filters."));
}

function historyRow(job) {
  const row = h("tr", { dataset: { job: job.job_id } });
  fillRow(row, job);
  return row;
}

function fillRow(row, job) {
  const results = (job.result_urls || []).map((url, i) =>
    h("a", { href: url, target: "_blank", rel: "noopener" }, job.cuts[i] || `render ${i + 1}`));
  const retry = job.status === "failed"
    ? h("button", { type: "button", class: "button", onclick: () => retryJob(row, job) }, "Retry")
    : null;
  row.replaceChildren(
    h("td", { dataset: { label: "Created" } }, new Date(job.created_at).toLocaleString()),
    h("td", { dataset: { label: "Job" } }, h("code", { title: job.job_id }, job.job_id.slice(0, 8))),
    h("td", { dataset: { label: "Fabric" } }, `${job.family_id} / ${job.color_id}`),
    h("td", { dataset: { label: "Cuts" } }, job.cuts.join(", ")),
    h("td", { dataset: { label: "Status" } },
      h("span", { class: "status-pill", dataset: { status: job.status } }, job.status),
      job.attempts > 1 ? h("span", { class: "hint" }, ` (${job.attempts} attempts)`) : null),
    h("td", { dataset: { label: "Result" } },
      job.error_message ? h("span", { class: "error-text" }, job.error_message) : null,
      job.error_detail ? h("span", { class: "hint error-detail" }, ` (${job.error_detail})`) : null,
      ...results.flatMap((link, i) => (i ? [" · ", link] : [link]))),
    h("td", { dataset: { label: "Actions" } }, retry));
}

async function retryJob(row, job) {
  notice.clear();
  let retried;
  try {
    retried = await adminApi(`/admin/generations/${encodeURIComponent(job.job_id)}/retry`, { method: "POST" });
  } catch (error) {
    notice.error(`The job was not retried: ${error.message}`);
    return;
  }
  notice.info(`Job ${job.job_id.slice(0, 8)} is queued again.`);
  fillRow(row, retried);
  // Follow it to its end, as the shop page does, so the row shows the outcome without a reload.
  watchJob(job.job_id, {
    onUpdate: (update) => fillRow(row, { ...retried, ...update }),
    onError: () => {},
  });
}

$("login-form").addEventListener("submit", logIn);
$("logout").addEventListener("click", () => logOut());
if (token()) start();
else logOut();
