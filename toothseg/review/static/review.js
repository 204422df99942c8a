// toothseg review page: paint on a full-resolution mask canvas shown over the X-ray; the server saves it.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const imgCanvas = $("img"), maskCanvas = $("mask"), stage = $("stage"), viewport = $("viewport");
  const imgCtx = imgCanvas.getContext("2d"), maskCtx = maskCanvas.getContext("2d", { willReadFrequently: true });
  const COLOR = [40, 220, 90];
  const UNDO_LIMIT = 15;
  const st = { items: [], idx: -1, tool: "brush", size: 24, zoom: 1, panX: 0, panY: 0, undo: [],
               painting: false, panning: false, spaceDown: false, last: null, W: 0, H: 0, maskVisible: true };
  window.review = st;  // for tests and the curious

  function status(text, isError) {
    const s = $("status");
    s.textContent = text;
    s.className = isError ? "error" : "";
  }

  async function api(path, options) {
    const r = await fetch(path, options);
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
    return body;
  }

  function loadImage(src) {
    return new Promise((resolve, reject) => {
      const im = new Image();
      im.onload = () => resolve(im);
      im.onerror = () => reject(new Error(`could not load ${src}`));
      im.src = src;
    });
  }

  // ------------------------------------------------------------------ list
  function renderList() {
    const ol = $("list");
    ol.innerHTML = "";
    st.items.forEach((it, i) => {
      const li = document.createElement("li");
      li.className = i === st.idx ? "current" : "";
      const score = it.scores.score !== undefined ? it.scores.score.toFixed(3) : "";
      li.innerHTML = `<span></span><span class="st ${it.status}">${it.status}</span>`;
      li.firstChild.textContent = `${i + 1}. ${it.name} ${score}`;
      li.title = it.reason || it.key;
      li.onclick = () => show(i);
      ol.appendChild(li);
    });
  }

  function renderScores(it) {
    const parts = Object.entries(it.scores).map(([k, v]) => `${k} <b>${v.toFixed(3)}</b>`);
    $("scores").innerHTML = parts.join(" · ") + (it.reason ? " — " : "");
    $("scores").appendChild(document.createTextNode(it.reason || ""));
  }

  // ------------------------------------------------------------------ view
  function applyTransform() {
    stage.style.transform = `translate(${st.panX}px, ${st.panY}px) scale(${st.zoom})`;
  }

  function fit() {
    const vw = viewport.clientWidth, vh = viewport.clientHeight;
    st.zoom = Math.min(vw / st.W, vh / st.H) * 0.98;
    st.panX = (vw - st.W * st.zoom) / 2;
    st.panY = (vh - st.H * st.zoom) / 2;
    applyTransform();
  }

  function zoomAt(factor, cx, cy) {
    const z = Math.min(40, Math.max(0.05, st.zoom * factor));
    st.panX = cx - (cx - st.panX) * (z / st.zoom);
    st.panY = cy - (cy - st.panY) * (z / st.zoom);
    st.zoom = z;
    applyTransform();
  }

  async function show(i) {
    if (i < 0 || i >= st.items.length) return;
    st.idx = i;
    window.reviewReady = null;
    const it = st.items[i];
    renderList();
    renderScores(it);
    $("title").textContent = `${i + 1}/${st.items.length}  ${it.key}`;
    status("loading…");
    try {
      const [im, mk] = await Promise.all([loadImage(`/api/items/${encodeURIComponent(it.id)}/image?t=${Date.now()}`),
                                          loadImage(`/api/items/${encodeURIComponent(it.id)}/mask?t=${Date.now()}`)]);
      if (st.idx !== i) return;
      st.W = im.naturalWidth; st.H = im.naturalHeight;
      for (const c of [imgCanvas, maskCanvas]) { c.width = st.W; c.height = st.H; }
      stage.style.width = `${st.W}px`; stage.style.height = `${st.H}px`;
      imgCtx.drawImage(im, 0, 0);
      // the mask PNG (0/255 gray) becomes an opaque colour where tooth, transparent elsewhere
      const tmp = document.createElement("canvas");
      tmp.width = st.W; tmp.height = st.H;
      const tctx = tmp.getContext("2d");
      tctx.drawImage(mk, 0, 0, st.W, st.H);
      const src = tctx.getImageData(0, 0, st.W, st.H);
      const out = maskCtx.createImageData(st.W, st.H);
      for (let p = 0; p < src.data.length; p += 4) {
        if (src.data[p] > 127) {
          out.data[p] = COLOR[0]; out.data[p + 1] = COLOR[1]; out.data[p + 2] = COLOR[2]; out.data[p + 3] = 255;
        }
      }
      maskCtx.putImageData(out, 0, 0);
      st.undo = [];
      fit();
      status(`${st.W}x${st.H}; ${it.status}`);
      window.reviewReady = it.id;
    } catch (e) {
      status(e.message, true);
    }
  }

  // ------------------------------------------------------------------ painting
  function toImage(ev) {
    const r = maskCanvas.getBoundingClientRect();
    return [(ev.clientX - r.left) * st.W / r.width, (ev.clientY - r.top) * st.H / r.height];
  }

  function pushUndo() {
    st.undo.push(maskCtx.getImageData(0, 0, st.W, st.H));
    if (st.undo.length > UNDO_LIMIT) st.undo.shift();
  }

  function undo() {
    const snap = st.undo.pop();
    if (snap) { maskCtx.putImageData(snap, 0, 0); status("undone"); }
  }

  function strokeTo(p) {
    maskCtx.save();
    maskCtx.globalCompositeOperation = st.tool === "eraser" ? "destination-out" : "source-over";
    maskCtx.strokeStyle = maskCtx.fillStyle = `rgb(${COLOR.join(",")})`;
    maskCtx.lineWidth = st.size;
    maskCtx.lineCap = maskCtx.lineJoin = "round";
    maskCtx.beginPath();
    if (st.last) { maskCtx.moveTo(st.last[0], st.last[1]); maskCtx.lineTo(p[0], p[1]); maskCtx.stroke(); }
    else { maskCtx.arc(p[0], p[1], st.size / 2, 0, 2 * Math.PI); maskCtx.fill(); }
    maskCtx.restore();
    st.last = p;
  }

  viewport.addEventListener("contextmenu", (ev) => ev.preventDefault());
  viewport.addEventListener("pointerdown", (ev) => {
    if (!st.W) return;
    viewport.setPointerCapture(ev.pointerId);
    if (ev.button === 1 || ev.button === 2 || st.spaceDown) {
      st.panning = true; st.last = [ev.clientX, ev.clientY];
      viewport.classList.add("panning");
      return;
    }
    if (ev.button !== 0) return;
    pushUndo();
    st.painting = true; st.last = null;
    strokeTo(toImage(ev));
  });
  viewport.addEventListener("pointermove", (ev) => {
    if (st.panning) {
      st.panX += ev.clientX - st.last[0]; st.panY += ev.clientY - st.last[1];
      st.last = [ev.clientX, ev.clientY];
      applyTransform();
    } else if (st.painting) {
      strokeTo(toImage(ev));
    }
  });
  const endPointer = () => { st.painting = false; st.panning = false; st.last = null; viewport.classList.remove("panning"); };
  viewport.addEventListener("pointerup", endPointer);
  viewport.addEventListener("pointercancel", endPointer);
  viewport.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = viewport.getBoundingClientRect();
    zoomAt(Math.pow(1.1, -ev.deltaY / 100), ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });

  // ------------------------------------------------------------------ decisions
  function maskPng() {
    // opaque 0/255 gray at the image's own size: what the server stores
    const src = maskCtx.getImageData(0, 0, st.W, st.H);
    const c = document.createElement("canvas");
    c.width = st.W; c.height = st.H;
    const ctx = c.getContext("2d");
    const out = ctx.createImageData(st.W, st.H);
    for (let p = 0; p < src.data.length; p += 4) {
      const v = src.data[p + 3] > 127 ? 255 : 0;
      out.data[p] = out.data[p + 1] = out.data[p + 2] = v; out.data[p + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
    return new Promise((resolve) => c.toBlob(resolve, "image/png"));
  }

  async function decide(action) {
    const it = st.items[st.idx];
    if (!it || !window.reviewReady) return;
    try {
      const options = { method: "POST" };
      if (action === "accept") {
        options.body = await maskPng();
        options.headers = { "Content-Type": "image/png" };
      }
      const rec = await api(`/api/items/${encodeURIComponent(it.id)}/${action}`, options);
      it.status = rec.decision;
      window.lastDecision = rec;
      status(`${it.key}: ${rec.decision}${rec.mask ? " -> " + rec.mask : ""}`);
      const next = st.items.findIndex((x, j) => j > st.idx && x.status === "todo");
      if (next >= 0) show(next); else renderList();
    } catch (e) {
      status(`${it.key}: ${e.message}`, true);
    }
  }

  // ------------------------------------------------------------------ controls
  function setTool(t) {
    st.tool = t;
    $("brush").classList.toggle("active", t === "brush");
    $("eraser").classList.toggle("active", t === "eraser");
  }
  function setSize(s) {
    st.size = Math.max(1, Math.min(300, Math.round(s)));
    $("size").value = st.size; $("size-value").textContent = st.size;
  }
  function setOpacity() { maskCanvas.style.opacity = st.maskVisible ? $("opacity").value / 100 : 0; }

  $("brush").onclick = () => setTool("brush");
  $("eraser").onclick = () => setTool("eraser");
  $("size").oninput = (e) => setSize(+e.target.value);
  $("opacity").oninput = setOpacity;
  $("undo").onclick = undo;
  $("fit").onclick = fit;
  $("accept").onclick = () => decide("accept");
  $("reject").onclick = () => decide("reject");
  $("skip").onclick = () => decide("skip");
  window.addEventListener("resize", () => st.W && fit());

  document.addEventListener("keyup", (ev) => { if (ev.key === " ") { st.spaceDown = false; } });
  document.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "INPUT" && ev.target.type !== "range") return;
    const k = ev.key.toLowerCase();
    if (ev.key === " ") { st.spaceDown = true; ev.preventDefault(); return; }
    if ((ev.ctrlKey || ev.metaKey) && k === "z") { undo(); ev.preventDefault(); return; }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const r = viewport.getBoundingClientRect();
    const actions = {
      b: () => setTool("brush"), e: () => setTool("eraser"), z: undo,
      "[": () => setSize(st.size / 1.25), "]": () => setSize(st.size * 1.25 + 1),
      "0": fit, "+": () => zoomAt(1.25, r.width / 2, r.height / 2), "=": () => zoomAt(1.25, r.width / 2, r.height / 2),
      "-": () => zoomAt(0.8, r.width / 2, r.height / 2),
      o: () => { st.maskVisible = !st.maskVisible; setOpacity(); },
      a: () => decide("accept"), r: () => decide("reject"), s: () => decide("skip"),
      n: () => show(st.idx + 1), p: () => show(st.idx - 1),
    };
    if (actions[k]) { actions[k](); ev.preventDefault(); }
  });

  api("/api/items").then((data) => {
    st.items = data.items;
    $("who").textContent = `${data.user} → ${data.out}`;
    const first = st.items.findIndex((x) => x.status === "todo");
    show(first >= 0 ? first : 0);
  }).catch((e) => status(e.message, true));
})();
