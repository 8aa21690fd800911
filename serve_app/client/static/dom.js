// Building DOM without a framework: h("tag", {attributes}, ...children).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "style") el.style.cssText = value; // CSSOM: a style attribute would break our CSP
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

let counter = 0;
export function uid(prefix) {
  counter += 1;
  return `${prefix}-${counter}`;
}

// A labelled form control: the <label for> and the control, in a wrapper.
export function field(labelText, control, { hidden = false, hint, narrow = false } = {}) {
  if (!control.id) control.id = uid("f");
  return h("div", { class: narrow ? "field narrow" : "field" },
    h("label", { for: control.id, class: hidden ? "visually-hidden" : null }, labelText),
    control,
    hint ? h("small", { class: "hint" }, hint) : null);
}

// The page's one aria-live message area: errors and confirmations in plain words.
export function announcer(region) {
  return {
    error(text) {
      region.className = "notice error";
      region.textContent = text;
      region.hidden = false;
    },
    info(text) {
      region.className = "notice info";
      region.textContent = text;
      region.hidden = false;
    },
    clear() {
      region.textContent = "";
      region.hidden = true;
    },
  };
}
