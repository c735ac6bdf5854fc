// Live mode: the webcam streamed to /stream (a WebSocket), each answer drawn over the video as
// it plays: a box and a label per face, and per face (per track) a chart of its last seconds.
// The page sends at most FPS frames a second and never piles frames up in the socket; the
// service answers the newest frame it has and says how many it skipped.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    start: $("live-start"),
    stop: $("live-stop"),
    panel: $("live"),
    video: $("live-video"),
    boxes: $("live-boxes"),
    charts: $("live-charts"),
    stats: $("live-stats"),
    error: $("error"),
    keyForm: $("key-form"),
  };
  const FPS = 15;
  const SEND_SIDE = 640; // frames are sent at most this wide: enough for faces, light to send
  const CHART_SECONDS = 10;
  const MAX_BUFFERED = 512 * 1024; // bytes the socket may hold unsent before a frame is skipped
  const KEY_STORE = "emotion-api-key";
  const LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"];

  const live = {
    socket: null,
    stream: null,
    timer: null,
    sentAt: new Map(), // frame number -> when it was sent (ms), for the delay
    sent: 0,
    answered: 0,
    dropped: 0,
    delay: 0,
    history: new Map(), // track -> [{t, probabilities}] of the last CHART_SECONDS
    canvas: document.createElement("canvas"),
  };

  const color = (label) =>
    getComputedStyle(document.documentElement).getPropertyValue(`--${label}`).trim() || "#888";

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = false;
  }

  function streamUrl() {
    const url = new URL("stream", document.baseURI);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("detect", "always");
    return url.href;
  }

  async function start() {
    ui.error.hidden = true;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError("Live mode needs a webcam, which browsers allow only on secure pages (HTTPS or localhost).");
      return;
    }
    try {
      live.stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 } },
        audio: false,
      });
    } catch (error) {
      showError(`The webcam could not be started (${(error && error.name) || "unknown error"}).`);
      return;
    }
    ui.video.srcObject = live.stream;
    ui.panel.hidden = false;
    ui.start.disabled = true;
    Object.assign(live, { sent: 0, answered: 0, dropped: 0, delay: 0 });
    live.sentAt.clear();
    live.history.clear();
    ui.charts.replaceChildren();
    ui.boxes.replaceChildren();
    connect();
  }

  function connect() {
    const socket = new WebSocket(streamUrl());
    live.socket = socket;
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", () => {
      const key = sessionStorage.getItem(KEY_STORE);
      if (key) socket.send(JSON.stringify({ api_key: key }));
      live.timer = setInterval(sendFrame, 1000 / FPS);
    });
    socket.addEventListener("message", (event) => receive(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => {
      if (live.socket !== socket) return;
      const reasons = {
        1008: "This service needs an API key: enter it below, then start Live again.",
        1013: event.reason || "The service is busy: try again shortly.",
        1001: event.reason || "The stream was closed.",
      };
      if (event.code !== 1000 && event.code !== 1005) {
        showError(reasons[event.code] || `The stream closed (${event.code} ${event.reason}).`);
      }
      if (event.code === 1008) ui.keyForm.hidden = false;
      stop();
    });
  }

  function sendFrame() {
    const { socket, canvas } = live;
    const { videoWidth: width, videoHeight: height } = ui.video;
    if (!socket || socket.readyState !== WebSocket.OPEN || !width) return;
    if (socket.bufferedAmount > MAX_BUFFERED) return; // the network is the bottleneck: skip
    const scale = Math.min(1, SEND_SIDE / width);
    canvas.width = Math.round(width * scale);
    canvas.height = Math.round(height * scale);
    canvas.getContext("2d").drawImage(ui.video, 0, 0, canvas.width, canvas.height);
    canvas.toBlob((blob) => {
      if (!blob || socket.readyState !== WebSocket.OPEN) return;
      live.sent += 1;
      live.sentAt.set(live.sent, performance.now());
      socket.send(blob);
    }, "image/jpeg", 0.8);
  }

  function receive(answer) {
    const now = performance.now();
    const sentAt = live.sentAt.get(answer.frame);
    for (const number of live.sentAt.keys()) {
      if (number <= answer.frame) live.sentAt.delete(number);
    }
    if (sentAt !== undefined) live.delay = now - sentAt;
    live.answered += 1;
    live.dropped += answer.dropped || 0;
    if (answer.error) {
      ui.stats.textContent = `Frame ${answer.frame}: ${answer.error}`;
      return;
    }
    drawBoxes(answer);
    remember(answer, now);
    drawCharts(now);
    const faces = answer.faces.length;
    ui.stats.textContent =
      `${live.answered} frames answered · ${live.dropped} skipped · ` +
      `delay ${Math.round(live.delay)} ms · ${faces} face${faces === 1 ? "" : "s"}`;
    ui.stats.dataset.answered = String(live.answered);
  }

  function drawBoxes({ faces, width, height }) {
    ui.boxes.replaceChildren(
      ...faces.map((face) => {
        const { x, y, width: w, height: h } = face.box;
        const box = document.createElement("div");
        box.className = "face-box";
        box.dataset.emotion = face.emotion;
        box.dataset.track = face.track;
        // The video is shown mirrored (as people expect): so are the boxes.
        box.style.left = `${(1 - (x + w) / width) * 100}%`;
        box.style.top = `${(y / height) * 100}%`;
        box.style.width = `${(w / width) * 100}%`;
        box.style.height = `${(h / height) * 100}%`;
        if (y / height < 0.08) box.classList.add("tag-inside");
        const tag = document.createElement("span");
        tag.className = "face-tag";
        tag.textContent = `${face.track} · ${face.emotion} ${Math.round(face.confidence * 100)}%`;
        box.append(tag);
        return box;
      }),
    );
  }

  function remember(answer, now) {
    for (const face of answer.faces) {
      if (!live.history.has(face.track)) live.history.set(face.track, []);
      live.history.get(face.track).push({ t: now, probabilities: face.probabilities });
    }
    for (const [track, points] of live.history) {
      while (points.length && now - points[0].t > CHART_SECONDS * 1000) points.shift();
      if (!points.length) live.history.delete(track);
    }
  }

  function drawCharts(now) {
    const present = new Set();
    for (const [track, points] of live.history) {
      present.add(String(track));
      let item = ui.charts.querySelector(`[data-track="${track}"]`);
      if (!item) {
        item = document.createElement("li");
        item.className = "live-chart";
        item.dataset.track = track;
        const title = document.createElement("span");
        title.textContent = `Face ${track}`;
        const canvas = document.createElement("canvas");
        canvas.width = 280;
        canvas.height = 70;
        canvas.setAttribute("role", "img");
        item.append(title, canvas);
        ui.charts.append(item);
      }
      const canvas = item.querySelector("canvas");
      const last = points[points.length - 1].probabilities;
      const top = LABELS.reduce((a, b) => (last[a] >= last[b] ? a : b));
      canvas.setAttribute(
        "aria-label",
        `Face ${track}, last ${CHART_SECONDS} seconds: now mostly ${top}`,
      );
      plot(canvas, points, now);
    }
    for (const item of [...ui.charts.children]) {
      if (!present.has(item.dataset.track)) item.remove();
    }
  }

  function plot(canvas, points, now) {
    const context = canvas.getContext("2d");
    const { width, height } = canvas;
    context.clearRect(0, 0, width, height);
    const x = (t) => width - ((now - t) / (CHART_SECONDS * 1000)) * width;
    const y = (p) => height - 2 - p * (height - 4);
    context.lineWidth = 1.5;
    for (const label of LABELS) {
      context.strokeStyle = color(label);
      context.beginPath();
      points.forEach((point, index) => {
        const method = index ? "lineTo" : "moveTo";
        context[method](x(point.t), y(point.probabilities[label]));
      });
      context.stroke();
    }
  }

  function stop() {
    clearInterval(live.timer);
    live.timer = null;
    const socket = live.socket;
    live.socket = null;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000);
    if (live.stream) for (const track of live.stream.getTracks()) track.stop();
    live.stream = null;
    ui.video.srcObject = null;
    ui.start.disabled = false;
    ui.panel.hidden = true;
  }

  ui.start.addEventListener("click", start);
  ui.stop.addEventListener("click", () => {
    stop();
    ui.start.focus();
  });
})();
