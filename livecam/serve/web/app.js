// livecam's studio page and viewer page: plain JavaScript, no build step, nothing from a CDN.
// The server's HTTP API is described in livecam/serve.py; every request carries the page's token (if any).
"use strict";

const livecam = (() => {
  const token = new URLSearchParams(location.search).get("token") || "";
  const $ = (id) => document.getElementById(id);

  function withToken(url) {
    if (!token) return url;
    return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  }

  async function api(path, body) {
    const options = { headers: {} };
    if (token) options.headers["Authorization"] = "Bearer " + token;
    if (body !== undefined) {
      options.method = "POST";
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) throw new Error((data && data.error) || response.status + " " + response.statusText);
    return data;
  }

  function setStatus(text) { const el = $("status"); if (el) el.textContent = text; }

  // One receive-only peer connection; the server answers with the shared rendered track.
  async function connect(video, iceServers) {
    const pc = new RTCPeerConnection({ iceServers: iceServers || [] });
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (event) => {
      video.srcObject = event.streams[0] || new MediaStream([event.track]);
      video.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      setStatus(pc.connectionState === "connected" ? "live" : pc.connectionState);
      if (pc.connectionState === "failed") setTimeout(() => connect(video, iceServers), 2000);
    };
    await pc.setLocalDescription(await pc.createOffer());
    // Wait for ICE gathering so that the offer carries the candidates (no trickle endpoint).
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const check = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", check); resolve(); } };
      pc.addEventListener("icegatheringstatechange", check);
      setTimeout(resolve, 3000);
    });
    const answer = await api("api/offer", { sdp: pc.localDescription.sdp, type: pc.localDescription.type });
    await pc.setRemoteDescription(answer);
    return pc;
  }

  function fill(select, items, current) {
    select.innerHTML = "";
    for (const item of items) {
      const option = document.createElement("option");
      option.value = item.value;
      option.textContent = item.text;
      select.appendChild(option);
    }
    select.value = current;
  }

  function showState(state) {
    $("rendering").checked = state.rendering;
    $("keep_face").checked = state.keep_face;
    $("keep-face-row").hidden = state.engine !== "diffusion";
    fill($("style"), state.styles.map((s) => ({ value: s.name, text: s.label && s.label !== s.name ? `${s.name} (${s.label})` : s.name })), state.style);
    fill($("identity"), [{ value: "", text: "none" }, ...state.identities.map((i) => ({ value: i.name, text: i.name }))], state.identity);
    fill($("background"), state.backgrounds.map((b) => ({ value: b, text: b })), state.background);
    // The audience link carries the viewer-only token (it can watch, not control or download).
    $("viewer-link").href = state.viewer_share_url || withToken(state.viewer_url || "view");
  }

  async function change(key, value) {
    try {
      showState(await api("api/settings", { [key]: value }));
    } catch (e) {
      setStatus("could not change " + key + ": " + e.message);
    }
  }

  async function refreshStats() {
    try {
      const s = await api("api/stats");
      $("stat-engine").textContent = s.rendering ? s.engine : "off (raw camera)";
      $("stat-fps").textContent = s.fps.toFixed(1);
      $("stat-p50").textContent = s.latency_ms_p50 == null ? "–" : s.latency_ms_p50.toFixed(0);
      $("stat-p95").textContent = s.latency_ms_p95 == null ? "–" : s.latency_ms_p95.toFixed(0);
      $("stat-viewers").textContent = s.viewers;
    } catch (e) { /* the next tick tries again */ }
  }

  async function exportHeadshot() {
    const button = $("export");
    const status = $("export-status");
    button.disabled = true;
    status.textContent = "making headshots of this moment…";
    try {
      const result = await api("api/export", {});
      status.textContent = `kept ${result.kept} of ${result.tried} in ${result.seconds.toFixed(1)} s`;
      const list = $("exports");
      for (const image of result.images) {
        const item = document.createElement("li");
        const link = document.createElement("a");
        link.href = withToken(image.url);
        link.download = image.file;
        link.className = "download";
        const img = document.createElement("img");
        img.src = withToken(image.url);
        img.alt = image.file;
        link.appendChild(img);
        const caption = document.createElement("small");
        const likeness = image.likeness == null ? "–" : image.likeness.toFixed(2);
        const source = (image.disclosure.DigitalSourceType || "").split("/").pop();
        caption.textContent = `${image.file} · likeness ${likeness} · ${source}`;
        item.append(link, caption);
        list.prepend(item);
      }
      if (!result.images.length) {
        status.textContent += result.advice && result.advice.length
          ? ": none passed the quality gate: " + result.advice.join("; ")
          : ": none passed the quality gate (see the report)";
      }
      if (result.report_url) {
        const report = document.createElement("a");
        report.href = withToken(result.report_url);
        report.textContent = "report.json";
        report.download = "report.json";
        status.append(" · ", report);
      }
    } catch (e) {
      status.textContent = "export failed: " + e.message;
    } finally {
      button.disabled = false;
    }
  }

  async function studio() {
    try {
      const state = await api("api/state");
      showState(state);
      $("rendering").addEventListener("change", (e) => change("rendering", e.target.checked));
      $("keep_face").addEventListener("change", (e) => change("keep_face", e.target.checked));
      for (const key of ["style", "identity", "background"]) $(key).addEventListener("change", (e) => change(key, e.target.value));
      $("export").addEventListener("click", exportHeadshot);
      await connect($("video"), state.ice_servers);
      refreshStats();
      setInterval(refreshStats, 1000);
    } catch (e) {
      setStatus("cannot reach livecam: " + e.message);
    }
  }

  async function viewer() {
    try {
      const state = await api("api/state");
      await connect($("video"), state.ice_servers);
    } catch (e) {
      setStatus("cannot reach livecam: " + e.message);
    }
  }

  return { studio, viewer, api, withToken };
})();
