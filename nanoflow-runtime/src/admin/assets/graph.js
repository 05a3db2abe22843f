// Draws a workflow as an SVG graph, left to right, with a small layered (Sugiyama-style)
// layout: longest-path layers, dummy points on edges that skip layers, barycentric ordering
// to reduce crossings, then coordinates. Text goes in with textContent only.
"use strict";

const NanoGraph = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const GAP_X = 56, GAP_Y = 18, PAD = 12, NODE_H = 44, SMALL_H = 30;
  let markerSeq = 0;
  let measureCtx = null;

  function textWidth(text, font) {
    if (!measureCtx) measureCtx = document.createElement("canvas").getContext("2d");
    measureCtx.font = font;
    return measureCtx.measureText(text).width;
  }

  // "alloc::vec::Vec<my::Item>" -> "Vec<Item>"
  function shortType(t) {
    return String(t || "").replace(/[A-Za-z_][A-Za-z0-9_]*::/g, "");
  }

  function el(name, attrs) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }

  // The graph of a workflow from /workflows: triggers feed `input`, steps by name, `output`.
  function model(wf) {
    const nodes = new Map();
    const edges = [];
    (wf.triggers || []).forEach((t, i) => {
      nodes.set("trigger:" + i, { id: "trigger:" + i, kind: "trigger", title: t });
    });
    nodes.set("input", { id: "input", kind: "io", title: "input", sub: shortType(wf.input_type) });
    for (const s of wf.steps || []) {
      const alias = s.name !== s.node ? " (" + s.node + ")" : "";
      nodes.set(s.name, {
        id: s.name, kind: "step", title: s.name + alias,
        sub: shortType(s.input_type) + " \u2192 " + shortType(s.output_type),
        options: [s.retries ? "retries " + s.retries : "", s.timeout_ms ? "timeout " + s.timeout_ms + " ms" : ""]
          .filter(Boolean).join(", "),
      });
    }
    nodes.set("output", { id: "output", kind: "io", title: "output", sub: shortType(wf.output_type) });
    (wf.triggers || []).forEach((_, i) => edges.push({ from: "trigger:" + i, to: "input", trigger: true }));
    for (const [from, to] of wf.links || []) {
      if (nodes.has(from) && nodes.has(to)) edges.push({ from, to });
    }
    return { nodes, edges };
  }

  function layout(m) {
    const ids = [...m.nodes.keys()];
    const preds = new Map(ids.map((id) => [id, []]));
    const succs = new Map(ids.map((id) => [id, []]));
    for (const e of m.edges) { preds.get(e.to).push(e.from); succs.get(e.from).push(e.to); }
    // Longest-path layering (the graph is a DAG: workflow! refuses cycles).
    const layer = new Map();
    const visit = (id, seen) => {
      if (layer.has(id)) return layer.get(id);
      if (seen.has(id)) return 0;
      seen.add(id);
      let l = 0;
      for (const p of preds.get(id)) l = Math.max(l, visit(p, seen) + 1);
      layer.set(id, l);
      return l;
    };
    ids.forEach((id) => visit(id, new Set()));
    // The output sits alone in the last layer.
    const maxStep = Math.max(0, ...ids.filter((id) => id !== "output").map((id) => layer.get(id)));
    if (layer.get("output") <= maxStep) layer.set("output", maxStep + 1);

    // Split edges that skip layers into chains through dummy points.
    const all = new Map([...m.nodes].map(([id, n]) => [id, { ...n, dummy: false }]));
    const segs = [];
    const routes = [];
    let dummySeq = 0;
    for (const e of m.edges) {
      const chain = [e.from];
      for (let l = layer.get(e.from) + 1; l < layer.get(e.to); l++) {
        const id = "dummy:" + dummySeq++;
        all.set(id, { id, dummy: true });
        layer.set(id, l);
        chain.push(id);
      }
      chain.push(e.to);
      for (let i = 0; i + 1 < chain.length; i++) segs.push([chain[i], chain[i + 1]]);
      routes.push({ edge: e, chain });
    }
    const layers = [];
    for (const [id, l] of layer) (layers[l] = layers[l] || []).push(id);
    for (let l = 0; l < layers.length; l++) layers[l] = layers[l] || [];
    const up = new Map([...all.keys()].map((id) => [id, []]));
    const down = new Map([...all.keys()].map((id) => [id, []]));
    for (const [a, b] of segs) { down.get(a).push(b); up.get(b).push(a); }

    // Barycentric ordering, sweeping down and up a few times.
    const pos = new Map();
    const index = () => layers.forEach((ids) => ids.forEach((id, i) => pos.set(id, i)));
    index();
    const sweep = (from, neighbours) => {
      for (let l = from.start; l !== from.end; l += from.step) {
        const bary = new Map(layers[l].map((id) => {
          const ns = neighbours.get(id);
          return [id, ns.length ? ns.reduce((s, n) => s + pos.get(n), 0) / ns.length : pos.get(id)];
        }));
        layers[l].sort((a, b) => bary.get(a) - bary.get(b));
        layers[l].forEach((id, i) => pos.set(id, i));
      }
    };
    for (let i = 0; i < 4; i++) {
      sweep({ start: 1, end: layers.length, step: 1 }, up);
      sweep({ start: layers.length - 2, end: -1, step: -1 }, down);
    }

    // Sizes, then coordinates: columns by layer, each column centred vertically.
    for (const n of all.values()) {
      if (n.dummy) { n.w = 0; n.h = 0; continue; }
      const titleFont = n.kind === "trigger" ? "11.5px ui-monospace, Menlo, monospace" : "600 12.5px system-ui, sans-serif";
      const tw = textWidth(n.title, titleFont);
      const sw = n.sub ? textWidth(n.sub, "11px ui-monospace, Menlo, monospace") : 0;
      n.w = Math.ceil(Math.max(tw, sw) + 28);
      n.h = n.sub ? NODE_H : SMALL_H;
    }
    const colW = layers.map((ids) => Math.max(0, ...ids.map((id) => all.get(id).w)));
    const colH = layers.map((ids) => ids.reduce((s, id) => s + (all.get(id).h || 8) + GAP_Y, -GAP_Y));
    const height = Math.max(...colH, SMALL_H) + 2 * PAD;
    let x = PAD;
    layers.forEach((ids, l) => {
      let y = PAD + (height - 2 * PAD - colH[l]) / 2;
      for (const id of ids) {
        const n = all.get(id);
        const h = n.h || 8;
        n.x = x + (colW[l] - n.w) / 2;
        n.y = y + (h - n.h) / 2;
        n.cx = x + colW[l] / 2;
        n.cy = y + h / 2;
        y += h + GAP_Y;
      }
      x += colW[l] + GAP_X;
    });
    return { all, routes, width: x - GAP_X + PAD, height };
  }

  function path(points) {
    let d = "M" + points[0].x + "," + points[0].y;
    for (let i = 1; i < points.length; i++) {
      const p = points[i - 1], q = points[i];
      const dx = (q.x - p.x) / 2;
      d += " C" + (p.x + dx) + "," + p.y + " " + (q.x - dx) + "," + q.y + " " + q.x + "," + q.y;
    }
    return d;
  }

  // Renders workflow `wf`; `statuses` maps step names to succeeded/failed/running/retrying.
  function render(wf, statuses) {
    const g = layout(model(wf));
    const svg = el("svg", {
      class: "flow", width: g.width, height: g.height,
      viewBox: "0 0 " + g.width + " " + g.height, role: "img",
      "aria-label": "graph of workflow " + wf.name, "data-workflow": wf.name,
    });
    const marker = "nf-arrow-" + markerSeq++;
    const defs = el("defs");
    const m = el("marker", { id: marker, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    m.appendChild(el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#55627a" }));
    defs.appendChild(m);
    svg.appendChild(defs);
    for (const r of g.routes) {
      const pts = r.chain.map((id, i) => {
        const n = g.all.get(id);
        if (n.dummy) return { x: n.cx, y: n.cy };
        return i === 0 ? { x: n.x + n.w, y: n.cy } : { x: n.x, y: n.cy };
      });
      svg.appendChild(el("path", {
        class: "edge" + (r.edge.trigger ? " trigger" : ""), d: path(pts), "marker-end": "url(#" + marker + ")",
        "data-from": r.edge.from, "data-to": r.edge.to,
      }));
    }
    for (const n of g.all.values()) {
      if (n.dummy) continue;
      const status = n.kind === "step" && statuses ? statuses[n.id] : undefined;
      const grp = el("g", { class: "node " + n.kind + (status ? " " + status : ""), "data-node": n.id, transform: "translate(" + n.x + "," + n.y + ")" });
      grp.appendChild(el("rect", { width: n.w, height: n.h, rx: n.kind === "io" ? n.h / 2 : 7 }));
      const title = el("text", { x: n.w / 2, y: n.sub ? 18 : n.h / 2 + 4, "text-anchor": "middle" });
      title.textContent = n.title;
      grp.appendChild(title);
      if (n.sub) {
        const sub = el("text", { class: "sub", x: n.w / 2, y: 34, "text-anchor": "middle" });
        sub.textContent = n.sub;
        grp.appendChild(sub);
      }
      const tip = el("title");
      tip.textContent = n.title + (n.sub ? "\n" + n.sub : "") + (n.options ? "\n" + n.options : "") + (status ? "\n" + status : "");
      grp.appendChild(tip);
      svg.appendChild(grp);
    }
    return svg;
  }

  return { render, shortType, layout, model };
})();
