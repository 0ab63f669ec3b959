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
      const p = s.publish;
      $("stat-publish-box").hidden = !p;
      if (p) $("stat-publish").textContent = p.state === "publishing" ? `live in room ${p.room}` : `${p.state}: ${p.problem || "…"}`;
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

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = () => reject(new Error("cannot load " + src));
      document.head.appendChild(script);
    });
  }

  // janus.js asks webrtc-adapter only which browser this is: answer that, no adapter library needed.
  function browserDetails() {
    const ua = navigator.userAgent;
    const match = (re) => { const m = ua.match(re); return m ? parseInt(m[1], 10) : null; };
    if (/Firefox\//.test(ua)) return { browser: "firefox", version: match(/Firefox\/(\d+)/) };
    if (/Chrom(e|ium)\//.test(ua)) return { browser: "chrome", version: match(/Chrom(?:e|ium)\/(\d+)/) };
    if (/Safari\//.test(ua)) return { browser: "safari", version: match(/AppleWebKit\/(\d+)/) };
    return { browser: "unknown", version: null };
  }

  // The stream through the Janus room livecam publishes to (Janus's own JS library, served by livecam):
  // find livecam's feed, subscribe, show it; whatever goes wrong (Janus restarting, livecam republishing),
  // start again after a pause that grows to 30 s.
  function viaJanus(video, janusInfo, iceServers) {
    let delay = 1000;
    let janus = null;
    let attempt = 0;  // a failure reported twice (hang-up, then ICE) restarts once
    const retry = (why, mine) => {
      if (mine !== attempt) return;
      attempt += 1;
      setStatus("waiting for the stream (" + why + ")");
      if (janus) { const old = janus; janus = null; try { old.destroy({ cleanupHandles: true }); } catch (e) { /* gone */ } }
      setTimeout(start, delay);
      delay = Math.min(delay * 2, 30000);
    };
    const start = () => {
      const mine = attempt;
      const again = (why) => retry(why, mine);
      let handle = null;
      const session = new Janus({
        server: janusInfo.server,
        token: janusInfo.token || undefined,
        iceServers: iceServers,
        success: () => session.attach({
          plugin: "janus.plugin.videoroom",
          success: (h) => {
            handle = h;
            handle.send({
              message: { request: "listparticipants", room: janusInfo.room },
              success: (result) => {
                const feed = (result.participants || []).find((p) => p.publisher && p.display === janusInfo.display);
                if (!feed) return again("livecam is not publishing yet");
                const join = { request: "join", ptype: "subscriber", room: janusInfo.room, streams: [{ feed: feed.id }] };
                if (janusInfo.pin) join.pin = janusInfo.pin;
                handle.send({ message: join });
              },
              error: (e) => again(String(e)),
            });
          },
          error: (e) => again(String(e)),
          onmessage: (msg, jsep) => {
            if (msg.error) return again(msg.error);
            if (msg.unpublished || msg.leaving || msg.videoroom === "destroyed") return again("livecam stopped publishing");
            if (jsep) {
              handle.createAnswer({
                jsep: jsep,
                tracks: [{ type: "data" }],
                success: (answer) => handle.send({ message: { request: "start", room: janusInfo.room }, jsep: answer }),
                error: (e) => again(String(e)),
              });
            }
          },
          onremotetrack: (track, mid, on) => {
            if (track.kind !== "video" || !on) return;
            video.srcObject = new MediaStream([track]);
            video.play().catch(() => {});
          },
          webrtcState: (on) => { if (on) { delay = 1000; setStatus("live (via Janus)"); } },
          iceState: (state) => { if (state === "failed") again("the connection failed"); },
          hangup: () => again("hung up"),
        }),
        error: (e) => again(String(e)),
      });
      janus = session;
    };
    Janus.init({
      debug: false,
      dependencies: Janus.useDefaultDependencies({ adapter: { browserDetails: browserDetails() } }),
      callback: start,
    });
  }

  async function viewer() {
    try {
      const state = await api("api/state");
      if (state.janus) {
        await loadScript(withToken(state.janus.script));
        viaJanus($("video"), state.janus, state.ice_servers);
      } else {
        await connect($("video"), state.ice_servers);
      }
    } catch (e) {
      setStatus("cannot reach livecam: " + e.message);
    }
  }

  return { studio, viewer, api, withToken };
})();
