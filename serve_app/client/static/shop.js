// The shop page: catalog → (optional) swatch upload → cuts → generate → instant previews → live progress →
// renders with download links.

import { api } from "./api.js";
import { announcer, h } from "./dom.js";
import { FINAL, watchJob } from "./jobwatch.js";

const MAX_UPLOAD_BYTES = 5 * 1024 * 1024;
const IMAGE_TYPES = new Set(["image/jpeg", "image/png", "image/webp"]);
const RANDOM_PROFILES = new Set(["tiny-random", "full-random"]);
const STATUS_WORDS = {
  pending: "Waiting for a free tailor…", processing: "Rendering…", completed: "Ready",
  failed: "Could not be rendered", canceled: "Canceled", expired: "Past its deadline",
};

const $ = (id) => document.getElementById(id);
const notice = announcer($("notice"));
const swatchNotice = announcer($("swatch-error")); // next to the drop zone, where the eye is
const state = { catalog: null, swatchUrl: null, cutNames: {}, stopWatching: null, generating: false };

// -- health: say so plainly when the images are not real renders -------------------------------------
async function showHealth() {
  let health;
  try {
    const response = await fetch("/health", { headers: { Accept: "application/json" } });
    health = await response.json(); // a 503 still carries the report
  } catch {
    return;
  }
  const lines = [];
  if (RANDOM_PROFILES.has(health.model_profile)) {
    lines.push(`Demo mode: the service runs on random weights (${health.model_profile}), so images are not real renders: ` +
      "they are coloured noise in the outline of the cut.");
  }
  for (const warning of health.warnings || []) lines.push(warning);
  if (health.status && health.status !== "ok") lines.push("Part of the service is down; renders may be slow or fail.");
  if (!lines.length) return;
  const banner = $("health-banner");
  banner.replaceChildren(...lines.map((line) => h("p", {}, line)));
  banner.hidden = false;
}

// -- catalog: fabric cards with swatch images and color chips (radio buttons) -------------------------
// The chips are drawn only once the health banner has settled (or 2 s have passed): a banner that
// appeared above them later would move them under a shopper's pointer mid-click.
async function loadCatalog(healthShown) {
  try {
    state.catalog = await api("/catalog");
    await Promise.race([healthShown, new Promise((resolve) => setTimeout(resolve, 2000))]);
  } catch (error) {
    $("fabrics").replaceChildren(h("legend", { class: "visually-hidden" }, "Fabric and color"),
      h("p", { class: "loading" }, "The catalog could not be loaded."));
    notice.error(error.message);
    return;
  }
  renderFabrics();
  renderCuts();
}

function renderFabrics() {
  const { families } = state.catalog;
  const cards = families.filter((f) => f.colors.length).map((family, familyIndex) => {
    const preview = h("img", { class: "fabric-swatch", alt: "", loading: "lazy", width: 320, height: 160 });
    const chosen = h("p", { class: "fabric-color-name" });
    // Without a swatch image (none, or it fails to load) the color itself fills the card.
    preview.addEventListener("error", () => { preview.removeAttribute("src"); preview.alt = ""; });
    const show = (color) => {
      preview.style.backgroundColor = color.hex_value;
      if (color.swatch_url) {
        preview.alt = `${family.display_name}, ${color.name} swatch`;
        preview.src = color.swatch_url;
      } else {
        preview.alt = "";
        preview.removeAttribute("src");
      }
      chosen.textContent = color.name + (color.swatch_code ? ` · ${color.swatch_code}` : "");
    };
    const chips = family.colors.map((color, colorIndex) => {
      const id = `color-${color.color_id}`;
      const input = h("input", {
        type: "radio", name: "color", id, value: color.color_id, class: "chip-input",
        dataset: { family: family.family_id },
        checked: familyIndex === 0 && colorIndex === 0,
        onchange: () => { show(color); markSelected(); },
      });
      const chip = h("label", { for: id, class: "chip", title: color.name, style: `--chip:${color.hex_value}` },
        h("span", { class: "chip-dot", "aria-hidden": "true" }), h("span", { class: "chip-name" }, color.name));
      return [input, chip];
    });
    show(family.colors[0]);
    return h("article", { class: "fabric-card", dataset: { family: family.family_id } },
      preview,
      h("h3", {}, family.display_name),
      chosen,
      h("div", { class: "chips", role: "group", "aria-label": `${family.display_name} colors` }, chips));
  });
  const legend = h("legend", { class: "visually-hidden" }, "Fabric and color");
  $("fabrics").replaceChildren(legend, ...(cards.length ? cards : [h("p", {}, "No fabrics are on offer right now.")]));
  markSelected();
}

function markSelected() {
  const selected = document.querySelector('input[name="color"]:checked');
  for (const card of document.querySelectorAll(".fabric-card")) {
    card.classList.toggle("selected", Boolean(selected) && card.dataset.family === selected.dataset.family);
  }
}

function renderCuts() {
  const cuts = state.catalog.cuts;
  state.cutNames = Object.fromEntries(cuts.map((c) => [c.cut_id, c.display_name]));
  const items = cuts.map((cut, index) => h("div", { class: "cut-option" },
    h("input", { type: "checkbox", name: "cut", id: `cut-${cut.cut_id}`, value: cut.cut_id, checked: index === 0 }),
    h("label", { for: `cut-${cut.cut_id}` }, cut.display_name)));
  $("cuts").replaceChildren(h("legend", { class: "visually-hidden" }, "Cuts"), ...items);
}

// -- swatch upload: drag and drop or file input, checked here first, the server's reason if it refuses --
function describeSize(bytes) {
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : `${Math.ceil(bytes / 1024)} KB`;
}

async function uploadSwatch(file) {
  swatchNotice.clear();
  const status = $("swatch-status");
  if (!IMAGE_TYPES.has(file.type)) {
    swatchNotice.error(`“${file.name}” is not a JPEG, PNG or WebP photo; choose an image file.`);
    return;
  }
  if (file.size > MAX_UPLOAD_BYTES) {
    swatchNotice.error(`“${file.name}” is ${describeSize(file.size)}; photos can be at most 5 MB. ` +
      "Try a smaller or more compressed one.");
    return;
  }
  status.replaceChildren(h("p", {}, `Uploading “${file.name}”…`));
  const form = new FormData();
  form.append("file", file);
  try {
    const uploaded = await api("/upload-swatch", { method: "POST", form });
    state.swatchUrl = uploaded.swatch_url;
    status.replaceChildren(
      h("img", { src: uploaded.swatch_url, alt: "Your swatch photo", class: "swatch-thumb", width: 96, height: 96 }),
      h("p", {}, "Your swatch will be used for the render (the fabric chosen above gives the kind of cloth). ",
        h("button", { type: "button", class: "button link", onclick: clearSwatch }, "Stop using my photo")));
  } catch (error) {
    state.swatchUrl = null;
    status.replaceChildren();
    swatchNotice.error(`The photo was refused: ${error.message}`);
  }
}

function clearSwatch() {
  state.swatchUrl = null;
  swatchNotice.clear();
  $("swatch-status").replaceChildren();
  $("swatch-file").value = "";
}

function setUpUpload() {
  const input = $("swatch-file");
  input.addEventListener("change", () => { if (input.files.length) uploadSwatch(input.files[0]); });
  const zone = $("dropzone");
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) uploadSwatch(file);
  });
}

// -- generate, previews, progress, renders ------------------------------------------------------------
function previewUrl(cut, colorId) {
  const params = new URLSearchParams(state.swatchUrl ? { swatch_url: state.swatchUrl, cut } : { color_id: colorId, cut });
  return `/preview?${params}`;
}

function renderSlots(accepted, request) {
  const previews = accepted.preview_urls || {};
  const slots = request.cuts.map((cut) => {
    const name = state.cutNames[cut] || cut;
    const img = h("img", { class: "render", alt: `${name}: instant preview`, width: 512, height: 512, dataset: { stage: "preview" } });
    const placeholder = h("p", { class: "render-placeholder", hidden: true }, "No preview here yet: the render is on its way.");
    img.addEventListener("error", () => {
      if (img.dataset.stage !== "preview") return;
      img.dataset.stage = "none";
      img.removeAttribute("src");
      img.hidden = true;
      placeholder.hidden = false;
    });
    img.src = previews[cut] || previewUrl(cut, request.color_id);
    return h("figure", { class: "render-slot", dataset: { cut } },
      h("div", { class: "render-frame" }, img, placeholder),
      h("figcaption", {},
        h("span", { class: "cut-name" }, name),
        h("span", { class: "cut-status", dataset: { status: "pending" } }, "Preview · waiting for a free tailor…"),
        h("a", { class: "download button secondary", hidden: true, download: "", "aria-label": `Download the ${name} render` }, "Download")));
  });
  $("renders").replaceChildren(...slots);
  $("results").hidden = false;
}

/** Load `url` off-screen and only then put it in `img`, so the slot keeps its preview until the render
 * can be painted whole: swapping `src` at once left an image that had not loaded in the slot for a
 * while, painted differently by each browser. An image that will not load is put in anyway, so the
 * slot shows the same broken image the link would. */
function showWhenLoaded(img, url, shown) {
  const incoming = new Image();
  const swap = () => { if (img.dataset.incoming === url) { img.src = url; shown(); } };
  incoming.src = url;
  incoming.decode().then(swap, swap);
}

function showJob(job) {
  const byCut = Object.fromEntries((job.progress || []).map((p) => [p.cut, p]));
  (job.cuts || []).forEach((cut, index) => {
    const slot = document.querySelector(`.render-slot[data-cut="${CSS.escape(cut)}"]`);
    if (!slot) return;
    const entry = byCut[cut] || {};
    const url = entry.url || (job.result_urls && job.result_urls[index]);
    const cutStatus = url ? "completed" : entry.status || job.status;
    const img = slot.querySelector("img.render");
    const name = state.cutNames[cut] || cut;
    if (url && img.dataset.stage !== "render" && img.dataset.incoming !== url) {
      img.dataset.incoming = url;
      const link = slot.querySelector("a.download");
      link.href = url;
      link.hidden = false;
      showWhenLoaded(img, url, () => {
        img.dataset.stage = "render";
        img.hidden = false;
        slot.querySelector(".render-placeholder").hidden = true;
        img.alt = `${name} in your fabric: the render`;
      });
    } else if (!url && entry.preview_url && img.dataset.stage === "none" && !img.dataset.retried) {
      img.dataset.retried = "yes"; // the job's own preview URL, tried once
      img.dataset.stage = "preview";
      img.hidden = false;
      slot.querySelector(".render-placeholder").hidden = true;
      img.src = entry.preview_url;
    }
    const label = slot.querySelector(".cut-status");
    label.dataset.status = cutStatus;
    let words = STATUS_WORDS[cutStatus] || cutStatus;
    if (cutStatus === "completed" && entry.ip_adapter_fallback) words += " (without your swatch's texture)";
    if (!url && img.dataset.stage === "preview") words = `Preview · ${words.charAt(0).toLowerCase()}${words.slice(1)}`;
    label.textContent = words;
  });
  const done = (job.progress || []).filter((p) => p.status === "completed").length;
  let summary = `${STATUS_WORDS[job.status] || job.status} — ${done} of ${job.cuts.length} cut${job.cuts.length === 1 ? "" : "s"} done.`;
  if (job.status === "pending" && job.queue_position != null) summary = `${STATUS_WORDS.pending} ${queueWords(job)}`;
  if (job.status === "failed") summary = failureSentence(job.error_message);
  if (job.status === "canceled") summary = "The job was canceled.";
  if (job.status === "expired") summary = `The job passed its deadline — ${done} of ${job.cuts.length} cut${job.cuts.length === 1 ? "" : "s"} done.`;
  $("job-status").textContent = summary;
  $("job-status").dataset.status = job.status;
  if (FINAL.has(job.status)) setGenerating(false);
}

// "3 renders ahead of yours, starting in about 20 s": so a long wait never looks like a hang.
function queueWords(job) {
  const ahead = job.queue_position === 0 ? "Yours is next"
    : `${job.queue_position} render${job.queue_position === 1 ? "" : "s"} ahead of yours`;
  if (!job.estimated_start_at) return `${ahead}.`;
  const seconds = Math.max(0, Math.round((Date.parse(job.estimated_start_at) - Date.now()) / 1000));
  const when = seconds < 60 ? `${Math.max(seconds, 1)} s` : `${Math.round(seconds / 60)} min`;
  return `${ahead}, starting in about ${when}.`;
}

function setGenerating(on) {
  state.generating = on;
  const button = $("generate");
  button.disabled = on;
  button.textContent = on ? "Rendering…" : "Render my suit";
}

async function generate(event) {
  event.preventDefault();
  notice.clear();
  const color = document.querySelector('input[name="color"]:checked');
  const cuts = [...document.querySelectorAll('input[name="cut"]:checked')].map((c) => c.value);
  if (!color) { notice.error("Choose a fabric color first."); return; }
  if (!cuts.length) { notice.error("Choose at least one cut."); $("cuts").querySelector("input")?.focus(); return; }
  const request = { family_id: color.dataset.family, color_id: color.value, cuts };
  const seed = $("seed").value.trim();
  if (seed) {
    if (!/^\d+$/.test(seed)) { notice.error("The seed must be a whole number, or left empty."); return; }
    request.seed = Number(seed);
  }
  if (state.swatchUrl) request.swatch_url = state.swatchUrl;
  if (state.stopWatching) state.stopWatching();
  setGenerating(true);
  let accepted;
  try {
    accepted = await api("/generate", { method: "POST", json: request });
  } catch (error) {
    setGenerating(false);
    notice.error(`Your suit could not be started: ${error.message}`);
    return;
  }
  renderSlots(accepted, request);
  $("job-status").textContent = "Accepted — previews shown; the renders follow.";
  $("results").dataset.jobId = accepted.job_id;
  $("results").scrollIntoView({ behavior: "smooth", block: "start" });
  state.stopWatching = watchJob(accepted.job_id, {
    onUpdate: (job) => {
      if (state.progressError) { notice.clear(); state.progressError = false; }
      showJob(job);
    },
    onError: (message) => { state.progressError = true; notice.error(`Progress could not be read: ${message}`); },
    onMode: (mode) => { $("results").dataset.progress = mode; },
  });
}

$("order").addEventListener("submit", generate);
setUpUpload();
loadCatalog(showHealth());

// `error_message` is "code: sentence" (the code is for programs); a person reads the sentence.
function failureSentence(message) {
  const sentence = (message || "").split(": ").slice(1).join(": ") || "the render failed; try again";
  return `${sentence.charAt(0).toUpperCase()}${sentence.slice(1)}.`;
}
