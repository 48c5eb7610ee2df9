"use strict";
// The arena report page. Every piece of data (model names, questions, answers, judge reasoning) is
// untrusted text: it is only ever put in the page with textContent, setAttribute or as SVG text,
// never parsed as markup.
(function () {
  const DATA = JSON.parse(document.getElementById("arena-data").textContent);
  const R = DATA.report;
  const B = DATA.battles;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const OUTCOME_NAMES = { "2": "strong win", "1": "win", "0": "tie", "-1": "loss", "-2": "strong loss" };
  const VERDICT_PHRASES = { "2": "wins clearly", "1": "wins", "0": "ties", "-1": "loses", "-2": "loses clearly" };
  const NO_OUTCOME = 9;
  const STRING_COLUMNS = new Set(["qid", "q", "ac", "ao", "r1", "r2", "x1", "x2", "ref"]);
  const SCORE_COLUMNS = new Set(["mc", "mo"]);

  // ------------------------------------------------------------------ battles in parts
  // A big run keeps its first battles in this page and the rest in report_battles/part-NNNN.js beside
  // it, loaded once the page is drawn: each hands over a gzip'd, base64'd slice of the
  // battle columns with its own string table, merged here with its string ids shifted.

  async function inflate(z) {
    const bin = atob(z);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return JSON.parse(await new Response(stream).text());
  }

  function mergePart(b, p) {
    const so = b.strings.length, ro = b.ref_scores.length;
    for (const x of p.strings) b.strings.push(x);
    for (const x of p.ref_scores) b.ref_scores.push(x);
    for (const x of p.text_ids) b.text_ids.push(x + so);
    for (const [k, v] of Object.entries(p.columns)) {
      const col = b.columns[k];
      const off = STRING_COLUMNS.has(k) ? so : SCORE_COLUMNS.has(k) ? ro : 0;
      if (off) { for (const x of v) col.push(x >= 0 ? x + off : x); } else { for (const x of v) col.push(x); }
    }
    b.n += p.n;
  }

  // Each part is a script beside the page that calls window.ARENA_PARTS.push({i, n, z}); scripts are
  // added here (not as tags in the page) so they load after the page is drawn, each with its own
  // load / error event.
  function loadScript(src) {
    return new Promise((resolve) => {
      const tag = document.createElement("script");
      tag.addEventListener("load", () => resolve(true));
      tag.addEventListener("error", () => resolve(false));
      tag.setAttribute("src", src);
      document.body.appendChild(tag);
    });
  }

  async function loadParts(b) {
    const want = b.parts || [];
    const got = new Map();
    window.ARENA_PARTS = { push: (p) => { got.set(p.i, p.z); } };
    const missing = [];
    for (let k = 0; k < want.length; k++) {  // in order, one at a time: battles keep their order, memory its
      const ok = await loadScript(want[k].src);  // bound, and the page answers clicks between parts
      const z = ok ? got.get(k + 1) : undefined;
      if (z === undefined) { missing.push(want[k].src); continue; }
      got.delete(k + 1);
      mergePart(b, await inflate(z));
    }
    return missing;
  }

  // ------------------------------------------------------------------ DOM helpers (text only)

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    setProps(node, props);
    for (const c of children) append(node, c);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const c of children) append(node, c);
    return node;
  }

  function setProps(node, props) {
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k === "data") Object.assign(node.dataset, v);
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
      else if (k === "title" || k === "id" || k === "colSpan" || k === "hidden" || k === "tabIndex" || k === "type" || k === "value") node[k] = v;
      else node.setAttribute(k, String(v));
    }
  }

  function append(node, c) {
    if (c === undefined || c === null || c === false) return;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }

  const $ = (id) => document.getElementById(id);
  const pct = (x) => (x === null || x === undefined || Number.isNaN(x) ? "—" : (100 * x).toFixed(1));
  const signed = (x) => (x >= 0 ? "+" : "−") + Math.abs(x).toFixed(1);
  const int = (x) => (x === null || x === undefined ? "—" : Number(x).toLocaleString("en-US"));
  const secs = (x) => (x === null || x === undefined ? "—" : x < 1 ? (1000 * x).toFixed(0) + " ms" : x.toFixed(2) + " s");
  const clip = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);

  function table(headers, rows, props) {
    const head = el("tr", null, ...headers.map((h) => (h instanceof Node ? h : el("th", { text: h }))));
    return el("table", props, el("thead", null, head), el("tbody", null, ...rows));
  }
  const td = (text, cls) => el("td", { text: text, class: cls });
  const th = (text, cls) => el("th", { text: text, class: cls });

  // ------------------------------------------------------------------ header

  const boards = R.leaderboards || [];
  const overall = boards.find((b) => b.scope === "overall") || boards[0];
  const candidates = overall ? overall.entries.map((e) => e.model).filter((m) => m !== R.baseline) : [];
  document.title = "Arena report: " + candidates.length + " candidate(s) vs " + R.baseline;
  $("title").textContent = "Arena report: " + candidates.join(", ") + " vs " + R.baseline;
  $("subtitle").textContent = [
    "judge " + R.judge, "mode " + R.mode, int(B.total || B.n) + " battles",
    "rating " + R.rating.method + " (" + R.rating.overall + " overall), " + (R.rating.method === "elo-online" ? int(R.rating.rounds) + " bootstrap rounds, " + Math.round(100 * R.rating.ci) + "% spread (legacy online Elo: not a confidence interval)" : (R.rating.interval === "bootstrap" ? int(R.rating.rounds) + " bootstrap rounds, " : R.rating.interval + " intervals, ") + Math.round(100 * R.rating.ci) + "% CI"),
    "seed " + R.seed, "took " + secs(R.elapsed_seconds),
  ].join(" · ");

  // ------------------------------------------------------------------ leaderboards

  function boardTable(board) {
    const rows = board.entries.map((e, i) => {
      const isBase = e.model === R.baseline;
      const flags = (e.flags || []).length ? el("div", { class: "flags" }, ...e.flags.map((f) => el("span", { class: "tag", text: f }))) : null;
      const name = el("td", null, e.model, isBase ? el("span", { class: "tag", text: "baseline" }) : null, flags);
      return el("tr", { class: isBase ? "baseline" : "" },
        td(String(i + 1), "num"), name,
        td(isBase ? "50" : pct(e.winrate), "num winrate"),
        td(isBase ? "(+0.0 / +0.0)" : "(" + signed(100 * (e.lower - e.winrate)) + " / " + signed(100 * (e.upper - e.winrate)) + ")", "num"),
        td(e.rating.toFixed(0), "num"),
        td(e.rating_lower.toFixed(0) + " – " + e.rating_upper.toFixed(0), "num"),
        td(int(e.games), "num"));
    });
    const headers = [th("#", "num"), th("Model"), th("Win rate (%)", "num"), th("CI (%)", "num"), th("Rating", "num"), th("Rating CI", "num"), th("Games", "num")];
    const t = table(headers, rows, { class: "leaderboard", data: { scope: board.title, kind: board.scope } });
    t.insertBefore(el("caption", null, (board.scope === "overall" ? "" : board.scope === "dataset" ? "Dataset: " : "Subset: ") + board.title,
      el("span", { class: "muted", text: " · " + int(board.games) + " games · " + board.method })), t.firstChild);
    return t;
  }
  for (const b of boards) $("boards").appendChild(el("div", { class: "scroll board" }, boardTable(b)));
  if (!boards.length) $("boards").appendChild(el("p", { class: "muted", text: "No judged games yet." }));

  // ------------------------------------------------------------------ forest plot

  function drawForest(board) {
    const host = $("forest-plot");
    host.replaceChildren();
    if (!board || !board.entries.length) { host.appendChild(el("p", { class: "muted", text: "No games in this scope." })); return; }
    const W = 820, L = 190, Rm = 120, top = 30, rowH = 28;
    const H = top + rowH * board.entries.length + 14;
    const x = (v) => L + (W - L - Rm) * Math.max(0, Math.min(1, v));
    const s = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": "win rates with confidence intervals: " + board.title });
    for (let t = 0; t <= 10; t++) {
      const xx = x(t / 10);
      s.appendChild(svg("line", { x1: xx, x2: xx, y1: top - 6, y2: H - 10, class: t === 5 ? "even" : "grid" }));
      s.appendChild(svg("text", { x: xx, y: top - 12, "text-anchor": "middle" }, t * 10 + "%"));
    }
    board.entries.forEach((e, i) => {
      const y = top + rowH * i + rowH / 2;
      const isBase = e.model === R.baseline;
      const g = svg("g", { class: "row" }, svg("title", null, e.model + ": " + pct(e.winrate) + "% (" + pct(e.lower) + " – " + pct(e.upper) + ")"));
      g.appendChild(svg("text", { x: L - 10, y: y + 4, "text-anchor": "end" }, clip(e.model, 24)));
      if (!isBase) g.appendChild(svg("line", { x1: x(e.lower), x2: x(e.upper), y1: y, y2: y, class: "ci" }));
      if (!isBase) for (const v of [e.lower, e.upper]) g.appendChild(svg("line", { x1: x(v), x2: x(v), y1: y - 5, y2: y + 5, class: "ci" }));
      g.appendChild(isBase ? svg("rect", { x: x(0.5) - 4.5, y: y - 4.5, width: 9, height: 9, class: "base", transform: "rotate(45 " + x(0.5) + " " + y + ")" })
        : svg("circle", { cx: x(e.winrate), cy: y, r: 5, class: "pt" }));
      g.appendChild(svg("text", { x: W - Rm + 8, y: y + 4 }, isBase ? "50% (baseline)" : pct(e.winrate) + "%"));
      s.appendChild(g);
    });
    host.appendChild(s);
  }
  // Ratings (Elo scale, the baseline at 1000) with their intervals. The axis spans the points and the
  // intervals, at most 600 points beyond the outermost point: a bound past it (a model that only won
  // or lost has a huge one) is drawn to the edge with an arrow and written out in the label.
  function drawRatings(board) {
    const host = $("rating-plot");
    host.replaceChildren();
    if (!board || !board.entries.length) { host.appendChild(el("p", { class: "muted", text: "No games in this scope." })); return; }
    const W = 820, L = 190, Rm = 170, top = 30, rowH = 28;
    const H = top + rowH * board.entries.length + 14;
    const fin = (v) => typeof v === "number" && Number.isFinite(v);
    const pts = board.entries.map((e) => e.rating).filter(fin);
    const lo0 = Math.min(...pts), hi0 = Math.max(...pts);
    let lo = Math.min(lo0, ...board.entries.map((e) => e.rating_lower).filter(fin).map((v) => Math.max(v, lo0 - 600)));
    let hi = Math.max(hi0, ...board.entries.map((e) => e.rating_upper).filter(fin).map((v) => Math.min(v, hi0 + 600)));
    if (!(hi > lo)) { lo -= 100; hi += 100; }
    const pad = (hi - lo) * 0.04; lo -= pad; hi += pad;
    const x = (v) => L + (W - L - Rm) * (Math.max(lo, Math.min(hi, v)) - lo) / (hi - lo);
    const s = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": "ratings with confidence intervals: " + board.title });
    const step = [25, 50, 100, 200, 250, 500, 1000, 2000].find((st) => (hi - lo) / st <= 8) || 5000;
    for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) {
      s.appendChild(svg("line", { x1: x(t), x2: x(t), y1: top - 6, y2: H - 10, class: t === 1000 ? "even" : "grid" }));
      s.appendChild(svg("text", { x: x(t), y: top - 12, "text-anchor": "middle" }, String(t)));
    }
    board.entries.forEach((e, i) => {
      const y = top + rowH * i + rowH / 2;
      const isBase = e.model === R.baseline;
      const r0 = (v) => (fin(v) ? v.toFixed(0) : "—");
      const label = r0(e.rating) + " (" + r0(e.rating_lower) + " – " + r0(e.rating_upper) + ")";
      const g = svg("g", { class: "row", "data-model": e.model }, svg("title", null, e.model + ": rating " + label));
      g.appendChild(svg("text", { x: L - 10, y: y + 4, "text-anchor": "end" }, clip(e.model, 24)));
      if (!isBase && fin(e.rating_lower) && fin(e.rating_upper)) {
        g.appendChild(svg("line", { x1: x(e.rating_lower), x2: x(e.rating_upper), y1: y, y2: y, class: "ci" }));
        for (const v of [e.rating_lower, e.rating_upper]) {
          const cut = v < lo || v > hi;
          g.appendChild(cut ? svg("path", { d: v > hi ? "M" + x(v) + " " + y + " l-7 -5 v10 z" : "M" + x(v) + " " + y + " l7 -5 v10 z", class: "arrow" })
            : svg("line", { x1: x(v), x2: x(v), y1: y - 5, y2: y + 5, class: "ci" }));
        }
      }
      if (fin(e.rating)) {
        g.appendChild(isBase ? svg("rect", { x: x(e.rating) - 4.5, y: y - 4.5, width: 9, height: 9, class: "base", transform: "rotate(45 " + x(e.rating) + " " + y + ")" })
          : svg("circle", { cx: x(e.rating), cy: y, r: 5, class: "pt" }));
      }
      g.appendChild(svg("text", { x: W - Rm + 8, y: y + 4 }, isBase ? r0(e.rating) + " (baseline)" : label));
      s.appendChild(g);
    });
    host.appendChild(s);
  }

  boards.forEach((b, i) => $("forest-scope").appendChild(el("option", { value: String(i), text: (b.scope === "overall" ? "" : b.scope + ": ") + b.title })));
  $("forest-scope").addEventListener("change", (ev) => { drawForest(boards[Number(ev.target.value)]); drawRatings(boards[Number(ev.target.value)]); });
  drawForest(overall);
  drawRatings(overall);

  // ------------------------------------------------------------------ heat map

  function heatColor(v) {
    const t = Math.max(-1, Math.min(1, (v - 0.5) * 2));
    const [r, g, b] = t >= 0 ? [26, 150, 90] : [200, 60, 50];
    const a = Math.abs(t);
    const mix = (c) => Math.round(255 + (c - 255) * a * 0.85);
    return "rgb(" + mix(r) + "," + mix(g) + "," + mix(b) + ")";
  }
  const subsetIndex = new Map(B.subsets.map((s, i) => [s[0] + "\u0000" + s[1], i]));
  (function drawHeat() {
    const cols = boards.filter((b) => b.scope === "subset");
    if (overall) cols.push(overall);
    const rows = candidates.map((m) => el("tr", null, el("th", { text: m }), ...cols.map((b) => {
      const e = b.entries.find((x) => x.model === m);
      if (!e) return td("—", "empty");
      const cell = td(pct(e.winrate), "cell");
      cell.style.backgroundColor = heatColor(e.winrate);
      cell.title = m + " on " + b.title + ": " + pct(e.winrate) + "% (CI " + pct(e.lower) + " – " + pct(e.upper) + "), " + int(e.games) + " games";
      cell.addEventListener("click", () => browseTo(m, b.scope === "subset" ? subsetIndex.get(b.dataset + "\u0000" + b.subset) : -1));
      return cell;
    })));
    const headers = [th("Candidate"), ...cols.map((b) => th(b.scope === "overall" ? "OVERALL" : b.title, "num"))];
    $("heatmap-table").appendChild(candidates.length ? table(headers, rows, { class: "heat" }) : el("p", { class: "muted", text: "No candidates." }));
  })();

  // ------------------------------------------------------------------ battle columns

  // C, N and S cover the battles loaded so far (the page's own, then each part as it arrives)
  const C = {};
  let N = 0;
  const S = B.strings;
  function readColumns() {
    for (const [k, v] of Object.entries(B.columns)) C[k] = Int32Array.from(v);
    N = B.n;
  }
  readColumns();
  const str = (i) => (i >= 0 ? S[i] : null);
  const judgeLabel = (outcome, candIsA) => (outcome === NO_OUTCOME ? null : B.labels[candIsA ? 2 - outcome : 2 + outcome]);

  // ------------------------------------------------------------------ pairwise results

  function drawPairs() {
    $("pairs-table").replaceChildren();
    const pairs = new Map();
    for (let i = 0; i < N; i++) {
      const key = C.cand[i] * 65536 + C.opp[i];
      let p = pairs.get(key);
      if (!p) pairs.set(key, (p = { cand: C.cand[i], opp: C.opp[i], n: 0, win: 0, tie: 0, loss: 0, excluded: 0, sum: 0 }));
      p.n++;
      const s = C.s[i];
      if (s < 0) { p.excluded++; continue; }
      p.sum += s / 4;
      if (s > 2) p.win++; else if (s < 2) p.loss++; else p.tie++;
    }
    const rows = [...pairs.values()].sort((a, b) => B.models[a.cand].localeCompare(B.models[b.cand]) || B.models[a.opp].localeCompare(B.models[b.opp]))
      .map((p) => {
        const scored = p.n - p.excluded;
        return el("tr", null, td(B.models[p.cand]), td(B.models[p.opp]), td(int(p.n), "num"), td(int(p.win), "num"), td(int(p.tie), "num"),
          td(int(p.loss), "num"), td(int(p.excluded), "num"), td(scored ? (p.sum / scored).toFixed(3) : "—", "num"));
      });
    $("pairs-table").appendChild(rows.length ? table(["Candidate", "Opponent", "Battles", "Won", "Tied", "Lost", "Excluded", "Mean score"].map((h, i) => th(h, i >= 2 ? "num" : "")), rows, { id: "pairs" })
      : el("p", { class: "muted", text: "No battles." }));
  }
  drawPairs();

  // ------------------------------------------------------------------ judge diagnostics

  function drawJudge() {
    for (const id of ["judge-summary", "judge-consistency", "judge-labels", "judge-excluded"]) $(id).replaceChildren();
    const jd = R.judge_diagnostics || {};
    const games = (R.subsets || []).reduce((a, s) => a + s.games, 0);
    const perCand = new Map();
    const labelCounts = [0, 0, 0, 0, 0];
    let consistentN = 0, comparable = 0;
    for (let i = 0; i < N; i++) {
      const o1 = C.o1[i], o2 = C.o2[i];
      if (o1 !== NO_OUTCOME) labelCounts[2 - o1]++;
      if (o2 !== NO_OUTCOME) labelCounts[2 + o2]++;
      if (o1 !== NO_OUTCOME && o2 !== NO_OUTCOME) {
        const ok = Math.sign(o1) === Math.sign(o2);
        comparable++; consistentN += ok ? 1 : 0;
        const c = B.models[C.cand[i]];
        const p = perCand.get(c) || [0, 0];
        p[0] += ok ? 1 : 0; p[1]++;
        perCand.set(c, p);
      }
    }
    const bias = jd.position_bias;
    const card = (label, big, note) => el("div", { class: "card" }, el("div", { class: "muted", text: label }), el("div", { class: "big", text: big }), note ? el("div", { class: "muted", text: note }) : null);
    $("judge-summary").append(
      card("Judge", R.judge),
      card("Games judged", int(games - (jd.excluded || 0)), int(games) + " played"),
      card("Excluded games", int(jd.excluded || 0), games ? pct((jd.excluded || 0) / games) + "% of games" : null),
      card("Position consistency", comparable ? pct(consistentN / comparable) + "%" : "—", int(consistentN) + " of " + int(comparable) + " battles agree"),
      card("Position bias", bias === null || bias === undefined ? "—" : signed(100 * bias) + " pts",
        "A's share of decisive games minus B's (0 = none)"),
    );
    const consRows = [...perCand.entries()].map(([m, [ok, n]]) => {
      const share = (jd.position_consistency || {})[m];
      return el("tr", null, td(m), td(pct(share === undefined ? ok / n : share) + "%", "num"), td(int(ok) + " / " + int(n), "num"));
    });
    $("judge-consistency").appendChild(consRows.length ? el("div", { class: "scroll" }, table([th("Candidate"), th("Consistent", "num"), th("Battles", "num")], consRows, { id: "consistency-table" }))
      : el("p", { class: "muted", text: "No battle has two valid games." }));
    // one bar per candidate: the share of its battles whose two games agree, against the threshold
    // below which the judge is suspected of following the answers' position
    const minCons = ((R.reliability || {}).thresholds || {}).min_position_consistency;
    const cands = [...perCand.entries()];
    if (cands.length) {
      const W = 520, L = 150, Rm = 110, rowH = 24, top = 22, H = top + rowH * cands.length + 8;
      const x = (v) => L + (W - L - Rm) * v;
      const s = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": "position consistency per candidate" });
      for (let t = 0; t <= 4; t++) {
        s.append(svg("line", { x1: x(t / 4), x2: x(t / 4), y1: top - 4, y2: H - 6, class: "grid" }), svg("text", { x: x(t / 4), y: top - 8, "text-anchor": "middle" }, 25 * t + "%"));
      }
      cands.forEach(([m, [ok, n]], i) => {
        const share = (jd.position_consistency || {})[m] !== undefined ? jd.position_consistency[m] : ok / n;
        const y = top + rowH * i;
        s.appendChild(svg("g", { class: "row", "data-model": m },
          svg("title", null, m + ": " + pct(share) + "% of " + n + " battles agree across the two orders"),
          svg("text", { x: L - 8, y: y + 14, "text-anchor": "end" }, clip(m, 20)),
          svg("rect", { x: L, y: y + 3, width: Math.max(1, x(share) - L), height: 15, class: minCons !== undefined && share < minCons ? "bar low" : "bar2" }),
          svg("text", { x: x(share) + 6, y: y + 14 }, pct(share) + "%")));
      });
      if (minCons !== undefined) s.append(svg("line", { x1: x(minCons), x2: x(minCons), y1: top - 4, y2: H - 6, class: "even" }, svg("title", null, "threshold " + pct(minCons) + "%")));
      $("judge-consistency").appendChild(el("div", { class: "plot", id: "consistency-plot" }, s));
    }
    const totalLabels = labelCounts.reduce((a, b) => a + b, 0);
    $("judge-labels").appendChild(el("div", { class: "scroll" }, table([th("Verdict"), th("Games", "num"), th("Share", "num")],
      B.labels.map((l, i) => el("tr", null, td(l), td(int(labelCounts[i]), "num"), td(totalLabels ? pct(labelCounts[i] / totalLabels) + "%" : "—", "num"))))));
    const exRows = (R.subsets || []).map((s) => el("tr", null, td(s.dataset), td(s.subset), td(int(s.queries), "num"), td(int(s.games), "num"), td(int(s.excluded), "num"),
      td(Object.entries(s.excluded_reasons || {}).map(([r, n]) => r + ": " + n).join("; ") || "—")));
    $("judge-excluded").append(el("div", { class: "scroll" }, table([th("Dataset"), th("Subset"), th("Queries", "num"), th("Games", "num"), th("Excluded", "num"), th("Reasons")], exRows, { id: "excluded-table" })),
      el("button", { type: "button", text: "Browse excluded battles", on: { click: () => { $("f-mode").value = "excluded"; browseTo(null, null); } } }));
  }
  drawJudge();

  // ------------------------------------------------------------------ latency, tokens, cost

  (function drawUsage() {
    const eps = Object.entries(R.endpoints || {});
    const hasCost = eps.some(([, u]) => u.cost !== null && u.cost !== undefined);
    const headers = ["Endpoint", "Role", "Requests", "Reused", "Failed", "Attempts", "Prompt tok.", "Completion tok.", "Tok. / answer"]
      .concat(hasCost ? ["Cost"] : [], ["p50", "p90", "p99", "max"]).map((h, i) => th(h, i >= 2 ? "num" : ""));
    const rows = eps.map(([name, u]) => {
      const answered = u.requests - u.failures + u.reused;
      const lat = u.latency || {};
      return el("tr", null, td(name), td(u.role), td(int(u.requests), "num"), td(int(u.reused), "num"), td(int(u.failures), "num"), td(int(u.attempts), "num"),
        td(int(u.prompt_tokens), "num"), td(int(u.completion_tokens), "num"), td(answered > 0 ? (u.completion_tokens / answered).toFixed(1) : "—", "num"),
        hasCost ? td(u.cost === null ? "—" : "$" + u.cost.toFixed(4), "num") : null,
        td(secs(lat.p50), "num"), td(secs(lat.p90), "num"), td(secs(lat.p99), "num"), td(secs(lat.max), "num"));
    });
    $("usage-table").appendChild(table(headers, rows, { id: "usage" }));
    const withLat = eps.filter(([, u]) => u.latency && u.latency.p50 !== undefined);
    if (!withLat.length) return;
    const max = Math.max(...withLat.map(([, u]) => u.latency.p90));
    const W = 820, L = 190, Rm = 220, rowH = 26, H = 20 + rowH * withLat.length;
    const x = (v) => (W - L - Rm) * (max > 0 ? v / max : 0);
    const s = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": "latency per endpoint" });
    withLat.forEach(([name, u], i) => {
      const y = 10 + rowH * i;
      s.append(svg("text", { x: L - 10, y: y + 14, "text-anchor": "end" }, clip(name, 24)),
        svg("rect", { x: L, y: y + 2, width: Math.max(1, x(u.latency.p90)), height: 16, class: "bar" }, svg("title", null, name + " p90 " + secs(u.latency.p90))),
        svg("rect", { x: L, y: y + 2, width: Math.max(1, x(u.latency.p50)), height: 16, class: "bar2" }, svg("title", null, name + " p50 " + secs(u.latency.p50))),
        svg("text", { x: L + x(u.latency.p90) + 8, y: y + 14 }, "p50 " + secs(u.latency.p50) + " · p90 " + secs(u.latency.p90)));
    });
    $("usage-plot").appendChild(s);
  })();

  // ------------------------------------------------------------------ reference metrics

  (function drawReference() {
    const refs = R.reference_metrics || [];
    if (!refs.length) return;
    $("reference").hidden = false;
    $("nav-reference").hidden = false;
    const names = [...new Set(refs.flatMap((r) => Object.keys(r.scores)))];
    const rows = refs.map((r) => el("tr", null, td(r.model), td(r.dataset), td(r.subset), td(int(r.num), "num"),
      ...names.map((n) => td(r.scores[n] === undefined ? "—" : r.scores[n].toFixed(4), "num"))));
    $("reference-table").appendChild(table([th("Model"), th("Dataset"), th("Subset"), th("Num", "num"), ...names.map((n) => th(n, "num"))], rows));
  })();

  // ------------------------------------------------------------------ battle browser

  const state = { cand: -1, opp: -1, sub: -1, mode: "all", thr: 0.5, sort: "query", size: 25, page: 0, textMask: null, rows: new Int32Array(0), selected: -1 };
  if (!B.texts) $("browser-note").textContent = "Questions, answers and reasoning are not in this report: it was built without the run's checkpoints.";

  function fillSelect(select, items) {
    select.replaceChildren(el("option", { value: "-1", text: "all" }), ...items.map(([v, t]) => el("option", { value: String(v), text: t })));
  }
  function fillSelects() {
    const keep = ["f-candidate", "f-opponent", "f-subset"].map((id) => $(id).value);
    const candIds = [...new Set(C.cand)].sort((a, b) => B.models[a].localeCompare(B.models[b]));
    const oppIds = [...new Set(C.opp)].sort((a, b) => B.models[a].localeCompare(B.models[b]));
    fillSelect($("f-candidate"), candIds.map((i) => [i, B.models[i]]));
    fillSelect($("f-opponent"), oppIds.map((i) => [i, B.models[i]]));
    $("f-opponent").parentElement.hidden = oppIds.length <= 1;
    fillSelect($("f-subset"), B.subsets.map((s, i) => [i, s[0] + " / " + s[1]]));
    ["f-candidate", "f-opponent", "f-subset"].forEach((id, k) => {
      if (keep[k] && [...$(id).options].some((o) => o.value === keep[k])) $(id).value = keep[k];
    });
  }
  fillSelects();

  function busy(on) { document.body.dataset.browser = on ? "busy" : "ready"; $("search-state").textContent = on ? "searching…" : ""; }

  function applyFilters() {
    const out = new Int32Array(N);
    const { cand, opp, sub, mode } = state;
    const thr = state.thr, eps = 1e-9, mask = state.textMask;
    let k = 0;
    for (let i = 0; i < N; i++) {
      if (cand >= 0 && C.cand[i] !== cand) continue;
      if (opp >= 0 && C.opp[i] !== opp) continue;
      if (sub >= 0 && C.sub[i] !== sub) continue;
      const s = C.s[i];
      if (mode === "ge" && !(s >= 0 && s / 4 >= thr - eps)) continue;
      if (mode === "le" && !(s >= 0 && s / 4 <= thr + eps)) continue;
      if (mode === "excluded" && s >= 0) continue;
      if (mask !== null) {
        const hit = (j) => j >= 0 && mask[j] === 1;
        if (!(hit(C.q[i]) || hit(C.ac[i]) || hit(C.ao[i]) || hit(C.r1[i]) || hit(C.r2[i]))) continue;
      }
      out[k++] = i;
    }
    let rows = out.slice(0, k);
    if (state.sort !== "query") {
      const dir = state.sort === "asc" ? 1 : -1;
      rows = Int32Array.from(Array.from(rows).sort((a, b) => {
        const sa = C.s[a] < 0 ? 99 : dir * C.s[a], sb = C.s[b] < 0 ? 99 : dir * C.s[b];
        return sa - sb || a - b;
      }));
    }
    state.rows = rows;
    const pages = Math.max(1, Math.ceil(rows.length / state.size));
    state.page = Math.min(state.page, pages - 1);
    renderPage();
  }

  function scoreCell(s) {
    if (s < 0) return td("excluded", "num score-x");
    return td((s / 4).toFixed(2), "num score-" + s);
  }
  function outcomeText(o) { return o === NO_OUTCOME ? "excluded" : OUTCOME_NAMES[String(o)]; }

  function renderPage() {
    const rows = state.rows, size = state.size;
    const pages = Math.max(1, Math.ceil(rows.length / size));
    const start = state.page * size, end = Math.min(rows.length, start + size);
    const count = $("battle-count");
    count.textContent = int(rows.length);
    count.dataset.count = String(rows.length);
    $("battle-total").textContent = "(of " + int(N) + ")" + (N < (B.total || N) && !partsDone ? "; " + int(B.total - N) + " more loading…" : "");
    $("p-info").textContent = rows.length ? "battles " + int(start + 1) + "–" + int(end) + " · page " + int(state.page + 1) + " of " + int(pages) : "no battles";
    $("p-first").disabled = $("p-prev").disabled = state.page === 0;
    $("p-next").disabled = $("p-last").disabled = state.page >= pages - 1;
    const body = $("battle-rows");
    body.replaceChildren();
    for (let r = start; r < end; r++) {
      const i = rows[r];
      const sub = B.subsets[C.sub[i]];
      const q = str(C.q[i]);
      const tr = el("tr", { tabIndex: 0, data: { index: String(i) }, class: i === state.selected ? "selected" : "" },
        td(String(r + 1), "num"), td(sub[0] + " / " + sub[1]), td(str(C.qid[i])), td(B.models[C.cand[i]]), td(B.models[C.opp[i]]),
        scoreCell(C.s[i]), td(outcomeText(C.o1[i])), td(outcomeText(C.o2[i])), td(q === null ? "—" : clip(q, 160), "qtext"));
      tr.addEventListener("click", () => showBattle(i));
      tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") showBattle(i); });
      body.appendChild(tr);
    }
    if (start === end) body.appendChild(el("tr", null, el("td", { colSpan: 9, class: "muted", text: "No battle matches these filters." })));
  }

  function textBlock(id, text, missing) {
    return el("pre", { class: "text", id: id }, text === null ? missing : text);
  }

  function gameBox(n, i) {
    const cand = B.models[C.cand[i]], opp = B.models[C.opp[i]];
    const candIsA = n === 1;
    const o = n === 1 ? C.o1[i] : C.o2[i];
    const reasoning = str(n === 1 ? C.r1[i] : C.r2[i]);
    const excluded = str(n === 1 ? C.x1[i] : C.x2[i]);
    const label = judgeLabel(o, candIsA);
    return el("div", { class: "game", data: { game: String(n) } },
      el("h4", { text: "Game " + n + ": A = " + (candIsA ? cand : opp) + ", B = " + (candIsA ? opp : cand) }),
      el("p", { class: "verdict", id: "detail-verdict-" + n },
        label === null ? "no verdict" : "Judge: " + label + " → " + cand + " " + VERDICT_PHRASES[String(o)]),
      excluded === null ? null : el("p", { class: "excluded", id: "detail-excluded-" + n, text: "Excluded: " + excluded }),
      textBlock("detail-reasoning-" + n, reasoning, B.texts ? "(no judge output stored)" : "(not in this report)"));
  }

  // Side-by-side differences of the two answers, word by word (a longest common subsequence of their
  // words and spaces): words only in the candidate's answer are marked in it, words only in the
  // opponent's in that one. Built with text nodes only; the texts read the same with marks or without.
  const DIFF_MAX = 3000;  // words per answer; beyond, the table of the LCS would be too big for a page
  function diffMarks(a, b) {
    const x = a.split(/(\s+)/), y = b.split(/(\s+)/);
    if (x.length > DIFF_MAX || y.length > DIFF_MAX) return null;
    const n = x.length, m = y.length, L = new Uint16Array((n + 1) * (m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
      L[i * (m + 1) + j] = x[i] === y[j] ? L[(i + 1) * (m + 1) + j + 1] + 1 : Math.max(L[(i + 1) * (m + 1) + j], L[i * (m + 1) + j + 1]);
    }
    const ka = new Uint8Array(n), kb = new Uint8Array(m);
    for (let i = 0, j = 0; i < n && j < m;) {
      if (x[i] === y[j]) { ka[i++] = 1; kb[j++] = 1; } else if (L[(i + 1) * (m + 1) + j] >= L[i * (m + 1) + j + 1]) i++; else j++;
    }
    return [[x, ka], [y, kb]];
  }
  function markDiff(pre, words, keep, cls) {
    pre.replaceChildren(...words.map((w, k) => (keep[k] || /^\s*$/.test(w) ? document.createTextNode(w) : el("mark", { class: cls, text: w }))));
  }
  function diffToggle(i) {
    const a = str(C.ac[i]), b = str(C.ao[i]);
    if (a === null || b === null) return null;
    const box = el("input", { type: "checkbox", id: "diff-toggle" });
    box.addEventListener("change", () => {
      const pa = $("detail-answer-candidate"), pb = $("detail-answer-opponent");
      const marks = box.checked ? diffMarks(a, b) : null;
      if (box.checked && marks === null) { $("diff-note").textContent = "too long to compare here"; box.checked = false; return; }
      $("diff-note").textContent = "";
      if (marks === null) { pa.textContent = a; pb.textContent = b; return; }
      markDiff(pa, marks[0][0], marks[0][1], "only-cand");
      markDiff(pb, marks[1][0], marks[1][1], "only-opp");
    });
    return el("p", { class: "diff" }, el("label", null, box, " Show differences between the two answers"), el("span", { class: "muted", id: "diff-note" }));
  }

  // The query's reference answer, and both answers scored against it (ROUGE / BLEU), when it has one.
  function referenceBox(i, cand, opp) {
    const ref = C.ref ? str(C.ref[i]) : null;
    if (ref === null) return null;
    const names = B.metric_names || [];
    const sc = (j) => (j >= 0 && B.ref_scores[j] ? B.ref_scores[j] : null);
    const mc = sc(C.mc[i]), mo = sc(C.mo[i]);
    const row = (who, m) => el("tr", { data: { model: who } }, td(who), ...names.map((_, k) => td(m ? m[k].toFixed(4) : "—", "num")));
    return el("div", { class: "question reference" },
      el("h4", { text: "Reference answer" }), textBlock("detail-reference", ref, "(none)"),
      names.length ? el("div", { class: "scroll" }, table([th("Answer against the reference"), ...names.map((n) => th(n, "num"))],
        [row(cand, mc), row(opp, mo)], { id: "detail-ref-metrics" })) : null);
  }

  function showBattle(i) {
    state.selected = i;
    for (const tr of $("battle-rows").children) tr.classList.toggle("selected", tr.dataset.index === String(i));
    const cand = B.models[C.cand[i]], opp = B.models[C.opp[i]];
    const sub = B.subsets[C.sub[i]];
    const s = C.s[i];
    const o1 = C.o1[i], o2 = C.o2[i];
    const agree = o1 === NO_OUTCOME || o2 === NO_OUTCOME ? "" : Math.sign(o1) === Math.sign(o2) ? " · both games agree" : " · the two games disagree (counted as a tie)";
    const missing = B.texts ? "(not available)" : "(not in this report)";
    const d = $("battle-detail");
    d.replaceChildren(
      el("h3", { id: "detail-title", text: cand + " vs " + opp }),
      el("p", { class: "muted", id: "detail-meta", text: sub[0] + " / " + sub[1] + " · query " + str(C.qid[i]) + " · score " + (s < 0 ? "none (excluded)" : (s / 4).toFixed(2)) + agree }),
      el("div", { class: "question" }, el("h4", { text: "Question" }), textBlock("detail-question", str(C.q[i]), missing)),
      ...[referenceBox(i, cand, opp)].filter((x) => x !== null),
      diffToggle(i),
      el("div", { class: "pair" },
        el("div", null, el("h4", { text: "Answer of " + cand + " (candidate)" }), textBlock("detail-answer-candidate", str(C.ac[i]), missing)),
        el("div", null, el("h4", { text: "Answer of " + opp + (opp === R.baseline ? " (baseline)" : " (opponent)") }), textBlock("detail-answer-opponent", str(C.ao[i]), missing))),
      el("div", { class: "pair" }, gameBox(1, i), gameBox(2, i)));
    d.hidden = false;
    d.dataset.index = String(i);
    d.scrollIntoView({ block: "nearest" });
  }

  // Text search: each distinct text is tested once (not once per battle), in slices so the page
  // stays responsive on large reports; a newer search abandons an older one.
  let searchGen = 0, debounce = 0, searchNeedle = "";
  function startSearch(needle) {
    const gen = ++searchGen;
    searchNeedle = needle;
    if (!needle) { state.textMask = null; busy(false); applyFilters(); return; }
    busy(true);
    const re = new RegExp(needle.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "i");
    const ids = B.text_ids, mask = new Uint8Array(S.length);
    let j = 0;
    (function step() {
      if (gen !== searchGen) return;
      const t0 = performance.now();
      while (j < ids.length && performance.now() - t0 < 25) {
        const end = Math.min(ids.length, j + 2000);
        for (; j < end; j++) if (re.test(S[ids[j]])) mask[ids[j]] = 1;
      }
      if (j < ids.length) { setTimeout(step, 0); return; }
      state.textMask = mask; state.page = 0;
      applyFilters();
      busy(false);
    })();
  }

  function readControls() {
    state.cand = Number($("f-candidate").value);
    state.opp = Number($("f-opponent").value);
    state.sub = Number($("f-subset").value);
    state.mode = $("f-mode").value;
    state.thr = Number($("f-threshold").value);
    state.sort = $("f-sort").value;
    state.size = Number($("f-page-size").value);
    $("f-threshold-value").textContent = state.thr.toFixed(2);
  }

  function browseTo(model, subset) {
    if (model !== null) $("f-candidate").value = String(B.models.indexOf(model));
    if (subset !== null) $("f-subset").value = String(subset === undefined ? -1 : subset);
    readControls();
    state.page = 0;
    applyFilters();
    $("browser").scrollIntoView({ block: "start" });
  }

  $("filters").addEventListener("submit", (ev) => ev.preventDefault());
  for (const id of ["f-candidate", "f-opponent", "f-subset", "f-mode", "f-sort", "f-page-size"]) {
    $(id).addEventListener("change", () => { readControls(); state.page = 0; applyFilters(); });
  }
  $("f-threshold").addEventListener("input", () => {
    readControls(); state.page = 0;
    if ($("f-mode").value === "all") { $("f-mode").value = "ge"; state.mode = "ge"; }
    applyFilters();
  });
  $("f-text").addEventListener("input", (ev) => {
    busy(true);
    clearTimeout(debounce);
    const needle = ev.target.value;
    debounce = setTimeout(() => startSearch(needle), 150);
  });
  const pages = () => Math.max(1, Math.ceil(state.rows.length / state.size));
  $("p-first").addEventListener("click", () => { state.page = 0; renderPage(); });
  $("p-prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); renderPage(); });
  $("p-next").addEventListener("click", () => { state.page = Math.min(pages() - 1, state.page + 1); renderPage(); });
  $("p-last").addEventListener("click", () => { state.page = pages() - 1; renderPage(); });

  let partsDone = !(B.parts || []).length;
  readControls();
  applyFilters();
  busy(false);
  $("loading").hidden = true;
  document.body.dataset.readyMs = String(Math.round(performance.now()));

  // The page is usable now; the battles of the parts join it when they are inflated.
  document.body.dataset.parts = partsDone ? "loaded" : "loading";
  if (!partsDone) {
    loadParts(B).then((missing) => {
      partsDone = true;
      readColumns();
      drawPairs();
      drawJudge();
      fillSelects();
      readControls();
      if (missing.length) {
        $("browser-note").textContent = "This run has " + int(B.total) + " battles; " + int(B.total - N) + " of them are in "
          + missing.length + " file(s) under report_battles/ that are not beside this page (" + missing[0]
          + (missing.length > 1 ? ", …" : "") + "): the tables and this browser show the " + int(N) + " it has; the leaderboards cover them all.";
      }
      if (searchNeedle) startSearch(searchNeedle); else applyFilters();
      document.body.dataset.parts = missing.length ? "missing" : "loaded";
      document.body.dataset.partsMs = String(Math.round(performance.now()));
    }).catch((err) => {
      $("browser-note").textContent = "The battles beyond the first " + int(N) + " could not be loaded: " + err;
      document.body.dataset.parts = "failed";
    });
  }
})();
