// Forms from JSON Schemas (draft 2020-12, as `schemars` writes them: `$defs` and `$ref`,
// `Option<T>` as a `null` alternative, enums as `enum` or `oneOf`) for the dashboard's
// "Start run" dialog, and a view of a run's input or output field by field against its schema.
// Builds its DOM with createElement/textContent only. Every field carries `data-path`, written
// like the `path` of a 422 (`items[2].qty`), so an error from the runner lands on its field.
"use strict";

const NanoForm = (() => {
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // Follows local `$ref`s (`#/$defs/Name`).
  function resolve(root, s) {
    for (let i = 0; s && typeof s.$ref === "string" && i < 16; i++) {
      if (!s.$ref.startsWith("#/")) break;
      const keys = s.$ref.slice(2).split("/").map((k) => k.replace(/~1/g, "/").replace(/~0/g, "~"));
      s = keys.reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), root);
    }
    return s && typeof s === "object" ? s : {};
  }

  function refName(s) {
    return s && typeof s.$ref === "string" ? s.$ref.split("/").pop() : null;
  }

  // [the schema without its `null` alternative, whether `null` is allowed].
  function unNull(root, schema) {
    const s = resolve(root, schema);
    if (Array.isArray(s.type) && s.type.includes("null")) {
      const rest = s.type.filter((t) => t !== "null");
      return [Object.assign({}, s, { type: rest.length === 1 ? rest[0] : rest }), true];
    }
    const alts = s.anyOf || s.oneOf;
    if (Array.isArray(alts) && alts.length === 2) {
      const i = alts.findIndex((a) => resolve(root, a).type === "null");
      if (i >= 0) return [alts[1 - i], true];
    }
    return [schema, false];
  }

  // A unit variant (`"Pending"`) or an externally tagged one (`{"Approved": payload}`).
  function variantOf(root, alt) {
    const a = resolve(root, alt);
    if (a.type === "string" && Array.isArray(a.enum)) return a.enum.map((v) => ({ name: v, unit: true }));
    if (a.type === "string" && a.const !== undefined) return [{ name: a.const, unit: true }];
    if (a.type === "object" && a.properties && Array.isArray(a.required) && a.required.length === 1 &&
        Object.keys(a.properties).length === 1) {
      const name = a.required[0];
      return [{ name, unit: false, schema: a.properties[name] }];
    }
    return null;
  }

  function kindOf(root, schema) {
    const s = resolve(root, schema);
    if (Array.isArray(s.enum) && s.enum.every((v) => typeof v === "string")) return "enum";
    const alts = s.oneOf || s.anyOf;
    if (Array.isArray(alts)) {
      const variants = alts.map((a) => variantOf(root, a));
      return variants.every(Boolean) ? "variants" : "json";
    }
    switch (s.type) {
      case "object": return s.properties ? "object" : "json";
      case "array": return s.items && !s.prefixItems ? "array" : "json";
      case "string": case "integer": case "number": case "boolean": case "null": return s.type;
      default: return "json";
    }
  }

  // A short description of what a schema wants: `integer (uint32)`, `Order`, `one of a, b`.
  function describe(root, schema) {
    const [inner, nullable] = unNull(root, schema);
    const s = resolve(root, inner);
    let text;
    const kind = kindOf(root, inner);
    if (kind === "enum") text = "one of " + s.enum.join(", ");
    else if (kind === "variants") text = "one of " + (s.oneOf || s.anyOf).flatMap((a) => variantOf(root, a).map((v) => v.name)).join(", ");
    else if (kind === "object") text = refName(inner) || s.title || "object";
    else if (kind === "array") text = "list of " + describe(root, s.items);
    else text = (Array.isArray(s.type) ? s.type.join(" or ") : s.type || "JSON") + (s.format ? " (" + s.format + ")" : "");
    return nullable ? text + ", optional" : text;
  }

  // A struct's fields in their declared order, as far as the schema keeps it: the object's keys
  // may arrive sorted, but `required` lists the required fields in order; the others follow.
  function fields(s) {
    const props = s.properties || {};
    const required = (s.required || []).filter((k) => k in props);
    const rest = Object.keys(props).filter((k) => !required.includes(k));
    return required.concat(rest).map((k) => [k, props[k]]);
  }

  function childPath(path, key) {
    if (typeof key === "number") return path + "[" + key + "]";
    return path ? path + "." + key : key;
  }

  // An editor: { el, get() (the value, or `undefined` to leave the field out) }.
  function editor(root, schema, path, value, nullable) {
    const kind = kindOf(root, schema);
    const s = resolve(root, schema);
    const blank = () => (nullable ? null : undefined);
    switch (kind) {
      case "null":
        return { el: el("span", { class: "muted", "data-path": path }, "nothing (null)"), get: () => null };
      case "boolean": {
        const input = el("input", { type: "checkbox", "data-path": path });
        input.checked = value === true;
        return { el: input, get: () => input.checked };
      }
      case "integer": case "number": {
        const input = el("input", {
          type: "number", "data-path": path, step: kind === "integer" ? "1" : "any",
          min: s.minimum, max: s.maximum,
        });
        if (typeof value === "number") input.value = String(value);
        return { el: input, get: () => (input.value.trim() === "" ? blank() : Number(input.value)) };
      }
      case "string": {
        const input = el("input", { type: "text", "data-path": path, autocomplete: "off", spellcheck: "false" });
        if (typeof value === "string") input.value = value;
        return { el: input, get: () => (input.value === "" && nullable ? null : input.value) };
      }
      case "enum": {
        const select = el("select", { "data-path": path },
          nullable || value === undefined ? el("option", { value: "" }, nullable ? "(none)" : "choose\u2026") : null,
          s.enum.map((v) => el("option", { value: v }, v)));
        if (typeof value === "string") select.value = value;
        return { el: select, get: () => (select.value === "" ? blank() : select.value) };
      }
      case "variants": {
        const variants = (s.oneOf || s.anyOf).flatMap((a) => variantOf(root, a));
        const select = el("select", { "data-path": path, "data-variants": "" },
          nullable ? el("option", { value: "" }, "(none)") : null,
          variants.map((v) => el("option", { value: v.name }, v.name)));
        const box = el("div", { class: "variant-payload" });
        let payload = null;
        const current = typeof value === "string" ? value
          : value && typeof value === "object" ? Object.keys(value)[0] : undefined;
        const pick = () => {
          const v = variants.find((x) => x.name === select.value);
          payload = v && !v.unit
            ? editor(root, v.schema, childPath(path, v.name), value && typeof value === "object" ? value[v.name] : undefined, false)
            : null;
          box.replaceChildren(payload ? payload.el : "");
        };
        if (current !== undefined) select.value = current;
        select.addEventListener("change", pick);
        pick();
        return {
          el: el("div", { class: "variant" }, select, box),
          get: () => {
            if (select.value === "") return blank();
            const v = variants.find((x) => x.name === select.value);
            return v.unit ? v.name : { [v.name]: payload.get() };
          },
        };
      }
      case "object": {
        const required = new Set(s.required || []);
        const entries = fields(s).map(([name, prop]) => {
          const [inner, optional] = unNull(root, prop);
          const sub = editor(root, inner, childPath(path, name),
            value && typeof value === "object" ? value[name] : undefined, optional || !required.has(name));
          const label = el("div", { class: "field" + (required.has(name) ? " required" : "") },
            el("span", { class: "name" }, name),
            el("span", { class: "type" }, describe(root, prop)),
            sub.el);
          return { name, sub, label };
        });
        return {
          el: el("fieldset", { class: "object", "data-path": path || "." },
            path ? el("legend", {}, describe(root, schema)) : null, entries.map((f) => f.label)),
          get: () => {
            const out = {};
            for (const f of entries) {
              const v = f.sub.get();
              if (v !== undefined) out[f.name] = v;
            }
            return out;
          },
        };
      }
      case "array": {
        const items = [];
        const list = el("ol", { class: "items", "data-path": path });
        const add = (v) => {
          const sub = editor(root, s.items, childPath(path, items.length), v, false);
          const entry = { sub };
          const li = el("li", {}, sub.el, el("button", {
            type: "button", class: "secondary small", title: "Remove this item",
            onclick: () => { items.splice(items.indexOf(entry), 1); li.remove(); },
          }, "\u2212"));
          entry.li = li;
          items.push(entry);
          list.appendChild(li);
        };
        for (const v of Array.isArray(value) ? value : []) add(v);
        return {
          el: el("div", { class: "array" }, list,
            el("button", { type: "button", class: "secondary small", "data-add": path, onclick: () => add(undefined) }, "+ item")),
          get: () => items.map((i) => i.sub.get()),
        };
      }
      default: {
        const area = el("textarea", { rows: "3", "data-path": path, spellcheck: "false" });
        if (value !== undefined) area.value = JSON.stringify(value, null, 2);
        return {
          el: area,
          get: () => {
            const text = area.value.trim();
            if (!text) return blank();
            try { return JSON.parse(text); } catch (e) { throw new Error((path || "input") + ": not valid JSON: " + e.message); }
          },
        };
      }
    }
  }

  return {
    // Whether `schema` can be edited as a form (otherwise: the JSON editor).
    supports(schema) {
      if (!schema || typeof schema !== "object") return false;
      return kindOf(schema, unNull(schema, schema)[0]) !== "json";
    },

    // A form for `schema`, prefilled with `value`: { el, get() }.
    build(schema, value) {
      const [inner, nullable] = unNull(schema, schema);
      return editor(schema, inner, "", value, nullable);
    },

    describe,

    // Marks the field at a 422's `path` (`.` is the whole input); returns it, if any.
    markInvalid(container, path) {
      for (const old of container.querySelectorAll("[aria-invalid]")) old.removeAttribute("aria-invalid");
      const target = container.querySelector('[data-path="' + CSS.escape(path === "." ? "" : path) + '"]') ||
        container.querySelector('[data-path="' + CSS.escape(path) + '"]');
      if (target) { target.setAttribute("aria-invalid", "true"); if (target.focus) target.focus(); }
      return target;
    },

    // `value` field by field against `schema`: a table of path, expected type and value; a
    // value that does not fit (a missing required field, another JSON type) is marked.
    view(schema, value) {
      const rows = [];
      const typeOk = (s, v) => {
        const t = Array.isArray(s.type) ? s.type : s.type ? [s.type] : null;
        if (!t) return true;
        const actual = v === null ? "null" : Array.isArray(v) ? "array" : typeof v === "number"
          ? (Number.isInteger(v) ? "integer" : "number") : typeof v;
        return t.includes(actual) || (actual === "integer" && t.includes("number"));
      };
      const walk = (sch, v, path, depth, required) => {
        const [inner, nullable] = unNull(schema, sch);
        const s = resolve(schema, inner);
        if (kindOf(schema, inner) === "object" && v && typeof v === "object" && !Array.isArray(v) && depth < 4) {
          const req = new Set(s.required || []);
          for (const [name, prop] of fields(s)) walk(prop, v[name], childPath(path, name), depth + 1, req.has(name));
          return;
        }
        const missing = v === undefined;
        const fits = missing ? !required : (v === null && nullable) || typeOk(s, v) ||
          (Array.isArray(s.enum) && s.enum.includes(v)) || kindOf(schema, inner) === "variants";
        rows.push(el("tr", { "data-field": path || ".", class: fits ? "" : "misfit" },
          el("td", { class: "mono" }, path || "."),
          el("td", { class: "type" }, describe(schema, sch)),
          el("td", { class: "mono" }, missing ? "(absent)" : JSON.stringify(v))));
      };
      walk(schema, value, "", 0, true);
      return el("table", { class: "schema-view" },
        el("thead", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "schema"), el("th", {}, "value"))),
        el("tbody", {}, rows));
    },
  };
})();
