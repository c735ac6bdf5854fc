// The demo page: send a photo (chosen, dropped, pasted or taken with the webcam) to /predict,
// the same endpoint every client calls, and draw what it answers. Plain JavaScript, no build.
// Every URL is relative, so the page also works when the service is mounted under a prefix.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    dropZone: $("drop-zone"),
    fileInput: $("file-input"),
    detect: $("detect"),
    cameraStart: $("camera-start"),
    camera: $("camera"),
    video: $("camera-video"),
    snap: $("camera-snap"),
    cameraStop: $("camera-stop"),
    status: $("status"),
    error: $("error"),
    result: $("result"),
    photo: $("photo"),
    boxes: $("boxes"),
    caption: $("caption"),
    faces: $("faces"),
    download: $("download"),
    keyForm: $("key-form"),
    key: $("api-key"),
  };

  const state = {
    request: 0, // answers to an older request than the latest are dropped
    photoUrl: null,
    image: null, // {blob, name, detect} of the photo on show, for the annotated download
    stream: null,
    pending: null, // {blob, name} refused for want of an API key, sent again once one is given
  };

  // ---- The API key, where the service has one (API_KEY) ----------------------------------
  // Kept for this tab only (sessionStorage), sent as X-API-Key with every call.

  const KEY_STORE = "emotion-api-key";

  function withKey(headers) {
    const key = sessionStorage.getItem(KEY_STORE);
    return key ? { ...headers, "X-API-Key": key } : headers;
  }

  function askForKey(blob, name) {
    state.pending = { blob, name };
    ui.keyForm.hidden = false;
    ui.key.focus();
  }

  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, ui.key.value);
    ui.key.value = "";
    ui.keyForm.hidden = true;
    if (state.pending) analyse(state.pending.blob, state.pending.name);
  });

  // ---- Messages -------------------------------------------------------------------------

  function setStatus(text, working = false) {
    ui.status.textContent = text;
    ui.status.classList.toggle("working", working);
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = false;
    setStatus("");
  }

  function clearError() {
    ui.error.hidden = true;
    ui.error.textContent = "";
  }

  function setBusy(busy) {
    document.body.classList.toggle("busy", busy);
    ui.download.disabled = busy;
    ui.snap.disabled = busy;
  }

  // The service answers every client mistake with {"detail": ...}: a sentence, or for parameter
  // errors (422) FastAPI's list of invalid fields.
  async function errorMessage(response) {
    let detail = null;
    try {
      detail = (await response.json()).detail;
    } catch {
      // not JSON: fall through to the status line
    }
    if (typeof detail === "string" && detail) return detail;
    if (Array.isArray(detail) && detail.length) {
      return detail.map((item) => item.msg || JSON.stringify(item)).join("; ");
    }
    return `The service answered ${response.status} ${response.statusText}`.trim();
  }

  // ---- Sending a photo --------------------------------------------------------------------

  async function analyse(blob, name) {
    const request = ++state.request;
    clearError();
    setBusy(true);
    setStatus("Looking for faces…", true);
    const detect = ui.detect.value;
    const form = new FormData();
    form.append("file", blob, name);
    let response;
    try {
      response = await fetch(`predict?detect=${encodeURIComponent(detect)}`, {
        method: "POST",
        body: form,
        headers: withKey({ Accept: "application/json" }),
      });
    } catch {
      if (request === state.request) {
        setBusy(false);
        showError("The service could not be reached. Is it still running?");
      }
      return;
    }
    if (request !== state.request) return;
    if (!response.ok) {
      const message = await errorMessage(response);
      if (request !== state.request) return;
      setBusy(false);
      hideResult();
      showError(message);
      if (response.status === 401) askForKey(blob, name);
      return;
    }
    const answer = await response.json();
    if (request !== state.request) return;
    state.image = { blob, name, detect };
    await showPhoto(blob, request);
    if (request !== state.request) return;
    renderFaces(answer);
    setBusy(false);
  }

  function hideResult() {
    ui.result.hidden = true;
    state.image = null;
  }

  async function showPhoto(blob, request) {
    if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
    state.photoUrl = URL.createObjectURL(blob);
    ui.photo.src = state.photoUrl;
    ui.boxes.hidden = false;
    try {
      await ui.photo.decode();
    } catch {
      // The browser cannot show this format (TIFF, in most): show the service's own drawing of
      // the answer instead, which already has the boxes on it.
      if (request !== state.request) return;
      const drawn = await fetchAnnotated(state.image, "image/png");
      if (request !== state.request || !drawn) return;
      URL.revokeObjectURL(state.photoUrl);
      state.photoUrl = URL.createObjectURL(drawn);
      ui.photo.src = state.photoUrl;
      ui.boxes.hidden = true;
    }
  }

  async function fetchAnnotated(image, type) {
    const form = new FormData();
    form.append("file", image.blob, image.name);
    try {
      const response = await fetch(
        `predict/annotated?detect=${encodeURIComponent(image.detect)}`,
        { method: "POST", body: form, headers: withKey({ Accept: type }) },
      );
      if (response.ok) return await response.blob();
      showError(await errorMessage(response));
    } catch {
      showError("The service could not be reached. Is it still running?");
    }
    return null;
  }

  // ---- Drawing the answer -----------------------------------------------------------------

  const percent = (p) => `${(p * 100).toFixed(1)}%`;
  const wholePercent = (p) => `${Math.round(p * 100)}%`;

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function renderFaces(answer) {
    ui.boxes.replaceChildren();
    ui.faces.replaceChildren();
    const { faces, width, height } = answer;
    const count = faces.length;

    faces.forEach((face, index) => {
      const number = index + 1;
      const { x, y, width: w, height: h } = face.box;

      const box = element("div", "face-box");
      box.dataset.emotion = face.emotion;
      box.dataset.face = number;
      box.style.left = `${(x / width) * 100}%`;
      box.style.top = `${(y / height) * 100}%`;
      box.style.width = `${(w / width) * 100}%`;
      box.style.height = `${(h / height) * 100}%`;
      if (y / height < 0.08) box.classList.add("tag-inside");
      const tag = element("span", "face-tag", `${number} · ${face.emotion} ${wholePercent(face.confidence)}`);
      box.append(tag);
      ui.boxes.append(box);

      const card = element("li", "face-card");
      card.dataset.emotion = face.emotion;
      card.dataset.face = number;
      card.tabIndex = 0;
      const title = element("h3");
      title.append(
        element("span", "face-number", `Face ${number}`),
        element("span", "face-emotion", face.emotion),
        element("span", "face-confidence", percent(face.confidence)),
      );
      const bars = element("ul", "bars");
      bars.setAttribute("aria-label", `Probabilities of the seven emotions, face ${number}`);
      for (const [label, probability] of Object.entries(face.probabilities)) {
        const bar = element("li", "bar");
        bar.dataset.emotion = label;
        if (label === face.emotion) bar.classList.add("top");
        const track = element("span", "bar-track");
        track.setAttribute("aria-hidden", "true");
        const fill = element("span", "bar-fill");
        fill.style.width = percent(probability);
        track.append(fill);
        bar.append(
          element("span", "bar-label", label),
          track,
          element("span", "bar-value", percent(probability)),
        );
        bars.append(bar);
      }
      card.append(title, bars);
      if (!face.detected) {
        card.append(
          element("p", "no-faces", "No face was found, so the whole image was read as one face."),
        );
      }
      ui.faces.append(card);

      const highlight = (on) => {
        box.classList.toggle("highlight", on);
        card.classList.toggle("highlight", on);
      };
      card.addEventListener("mouseenter", () => highlight(true));
      card.addEventListener("mouseleave", () => highlight(false));
      card.addEventListener("focus", () => highlight(true));
      card.addEventListener("blur", () => highlight(false));
    });

    if (count === 0) {
      ui.faces.append(element("li", "no-faces", "No face was found in this image."));
    }
    const wholeImage = count === 1 && !faces[0].detected;
    const summary = wholeImage
      ? "no face found, the whole image read as one"
      : count === 1
        ? "1 face found"
        : `${count} faces found`;
    ui.photo.alt = `The photo sent, ${width}×${height} pixels: ${summary}`;
    ui.caption.textContent = `${width}×${height} pixels · ${summary} · model ${answer.model.slice(0, 12)}`;
    ui.result.hidden = false;
    setStatus(`${summary[0].toUpperCase()}${summary.slice(1)}.`);
  }

  // ---- Choosing a photo -------------------------------------------------------------------

  function takeFile(files) {
    if (!files || !files.length) return;
    const [file] = files;
    analyse(file, file.name || "photo");
  }

  ui.fileInput.addEventListener("change", () => {
    takeFile(ui.fileInput.files);
    ui.fileInput.value = ""; // choosing the same file again is a new choice
  });

  // A file dropped anywhere on the page is taken, not opened by the browser in place of it.
  let dragDepth = 0;
  window.addEventListener("dragenter", (event) => {
    event.preventDefault();
    dragDepth += 1;
    ui.dropZone.classList.add("dragging");
  });
  window.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) ui.dropZone.classList.remove("dragging");
  });
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    ui.dropZone.classList.remove("dragging");
    takeFile(event.dataTransfer && event.dataTransfer.files);
  });

  window.addEventListener("paste", (event) => {
    const files = event.clipboardData && event.clipboardData.files;
    if (files && files.length) {
      event.preventDefault();
      takeFile(files);
    }
  });

  // A new detection mode applies to the photo on show at once.
  ui.detect.addEventListener("change", () => {
    if (state.image) analyse(state.image.blob, state.image.name);
  });

  // ---- The webcam -------------------------------------------------------------------------

  function cameraProblem(error) {
    switch (error && error.name) {
      case "NotAllowedError":
      case "SecurityError":
        return "Camera access was refused. Allow it in the browser's site settings, or choose a photo instead.";
      case "NotFoundError":
      case "OverconstrainedError":
        return "No camera was found. Connect one, or choose a photo instead.";
      case "NotReadableError":
        return "The camera is busy in another application. Close it there, or choose a photo instead.";
      default:
        return `The webcam could not be started (${(error && error.name) || "unknown error"}). Choose a photo instead.`;
    }
  }

  async function startCamera() {
    clearError();
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError(
        window.isSecureContext
          ? "This browser cannot use a webcam. Choose a photo instead."
          : "Browsers allow the webcam only on secure pages: open this page over HTTPS or on localhost, or choose a photo instead.",
      );
      return;
    }
    setStatus("Starting the webcam…", true);
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 } },
        audio: false,
      });
    } catch (error) {
      showError(cameraProblem(error));
      return;
    }
    ui.video.srcObject = state.stream;
    ui.camera.hidden = false;
    ui.dropZone.hidden = true;
    setStatus("Webcam on: take a photo when ready.");
    ui.snap.focus();
  }

  function stopCamera() {
    if (state.stream) {
      for (const track of state.stream.getTracks()) track.stop();
    }
    state.stream = null;
    ui.video.srcObject = null;
    ui.camera.hidden = true;
    ui.dropZone.hidden = false;
  }

  function snapPhoto() {
    const { videoWidth: width, videoHeight: height } = ui.video;
    if (!width || !height) {
      showError("The webcam has not sent a picture yet: wait a moment and try again.");
      return;
    }
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    canvas.getContext("2d").drawImage(ui.video, 0, 0, width, height);
    stopCamera();
    ui.cameraStart.focus();
    canvas.toBlob((blob) => {
      if (blob) analyse(blob, "webcam.jpg");
      else showError("The webcam picture could not be captured. Try again.");
    }, "image/jpeg", 0.92);
  }

  ui.cameraStart.addEventListener("click", startCamera);
  ui.cameraStop.addEventListener("click", () => {
    stopCamera();
    setStatus("");
    ui.cameraStart.focus();
  });
  ui.snap.addEventListener("click", snapPhoto);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.stream) ui.cameraStop.click();
  });

  // ---- The annotated download ---------------------------------------------------------------

  ui.download.addEventListener("click", async () => {
    if (!state.image) return;
    clearError();
    setBusy(true);
    const drawn = await fetchAnnotated(state.image, "image/png");
    setBusy(false);
    if (!drawn) return;
    const link = document.createElement("a");
    link.href = URL.createObjectURL(drawn);
    link.download = "annotated.png";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  });
})();
