// The oneshot page: plain JavaScript over the service's JSON API (see /docs). No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "oneshot-token";

function showError(message) {
  // The service's one-line message, as the CLI would print it after "error: ".
  $("error").textContent = message ? "error: " + message : "";
}

async function api(method, path, body) {
  // Calls the API; returns the parsed JSON and the status. A 401 reveals the token box.
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  let response;
  try {
    response = await fetch(path, { method, body, headers });
  } catch (err) {
    return { status: 0, data: { error: "cannot reach the service (" + err.message + ")" } };
  }
  let data;
  try {
    data = await response.json();
  } catch (err) {
    data = { error: "the service answered " + response.status + " without JSON" };
  }
  if (response.status === 401) $("token-row").classList.add("shown");
  return { status: response.status, data };
}

// -- people ----------------------------------------------------------------------------------------------------

async function loadPeople() {
  const { status, data } = await api("GET", "/people");
  if (status !== 200) { showError(data.error); return; }
  const list = $("people");
  list.replaceChildren();
  for (const person of data.people) {
    const item = document.createElement("li");
    item.dataset.name = person.name;
    const label = document.createElement("span");
    label.className = "person-name";
    label.textContent = person.name;
    const count = person.current ? person.faces + " photo" + (person.faces === 1 ? "" : "s")
                                 : "not recognised: enrolled with another model, re-enrol";
    const detail = document.createElement("span");
    detail.className = "note";
    detail.textContent = "  (" + count + ")";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "Remove";
    remove.addEventListener("click", () => removePerson(person.name));
    item.append(label, detail, remove);
    list.append(item);
  }
  $("people-empty").classList.toggle("hidden", data.people.length > 0);
}

async function removePerson(name) {
  if (!window.confirm("Remove " + name + " and every photo of theirs? This cannot be undone.")) return;
  const { status, data } = await api("DELETE", "/people/" + encodeURIComponent(name));
  if (status !== 200) showError(data.error);
  else showError("");
  await loadPeople();
}

// -- enrol -----------------------------------------------------------------------------------------------------

async function enroll(photo, filename) {
  const name = $("enroll-name").value;
  if (!name.trim()) { showError("name is empty; give a person's name"); return; }
  const form = new FormData();
  form.append("photo", photo, filename);
  form.append("name", name);
  form.append("largest", $("enroll-largest").checked ? "true" : "false");
  form.append("force", $("enroll-force").checked ? "true" : "false");
  const { status, data } = await api("POST", "/enroll", form);
  const result = $("enroll-result");
  if (status === 200) {
    showError("");
    result.className = "ok";
    result.textContent = data.message;
  } else {
    result.className = "";
    result.textContent = "";
    showError(data.error);
  }
  await loadPeople();
}

$("enroll-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("enroll-file").files[0];
  if (!file) { showError("choose a photo to enrol"); return; }
  await enroll(file, file.name);
});

// -- identify --------------------------------------------------------------------------------------------------

async function identify(photo, filename) {
  const form = new FormData();
  form.append("photo", photo, filename);
  const { status, data } = await api("POST", "/identify", form);
  const list = $("identify-result");
  list.replaceChildren();
  if (status !== 200) { showError(data.error); $("identify-canvas").classList.add("hidden"); return; }
  showError("");
  const answer = data.results[0];
  if (answer.faces.length === 0) {
    const item = document.createElement("li");
    item.className = "no-face";
    item.textContent = "no face found";
    list.append(item);
  }
  for (const face of answer.faces) {
    const item = document.createElement("li");
    item.className = "face";
    const who = document.createElement("span");
    who.className = "face-name";
    who.textContent = face.name === null ? "unknown" : face.name;
    const how = document.createElement("span");
    how.className = "note";
    how.textContent = face.distance === null ? "  (nobody is enrolled)"
      : "  (distance " + face.distance.toFixed(2) + ", threshold " + face.threshold.toFixed(2) + ")";
    item.append(who, how);
    list.append(item);
  }
  await drawFaces(photo, answer.faces);
}

async function drawFaces(photo, faces) {
  // The photo with each face's box and name (or "unknown"), in the photo's own pixel coordinates.
  const bitmap = await createImageBitmap(photo, { imageOrientation: "from-image" });
  const canvas = $("identify-canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const line = Math.max(2, Math.round(Math.min(bitmap.width, bitmap.height) / 150));
  const size = Math.max(12, Math.round(Math.min(bitmap.width, bitmap.height) / 22));
  ctx.font = "bold " + size + "px system-ui, sans-serif";
  ctx.textBaseline = "bottom";
  for (const face of faces) {
    const [x1, y1, x2, y2] = face.box;
    const colour = face.name === null ? "#e03030" : "#20c040";
    const label = face.name === null ? "unknown" : face.name;
    ctx.lineWidth = line;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const width = ctx.measureText(label).width + 8;
    const top = y1 - size - 6 >= 0 ? y1 - size - 6 : y2;
    ctx.fillStyle = colour;
    ctx.fillRect(x1, top, width, size + 6);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x1 + 4, top + size + 3);
  }
  canvas.classList.remove("hidden");
}

$("identify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("identify-file").files[0];
  if (!file) { showError("choose a photo to identify"); return; }
  await identify(file, file.name);
});

// -- camera ----------------------------------------------------------------------------------------------------

let stream = null;

$("camera-start").addEventListener("click", async () => {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("this browser gives no camera access here (it needs https or localhost)");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (err) {
    showError("cannot start the camera: " + err.message);
    return;
  }
  showError("");
  const video = $("camera");
  video.srcObject = stream;
  video.classList.remove("hidden");
  $("camera-stop").classList.remove("hidden");
  $("camera-enroll").disabled = false;
  $("camera-identify").disabled = false;
});

$("camera-stop").addEventListener("click", () => {
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  $("camera").classList.add("hidden");
  $("camera-stop").classList.add("hidden");
  $("camera-enroll").disabled = true;
  $("camera-identify").disabled = true;
});

function frame() {
  // The current camera frame as a JPEG blob.
  const video = $("camera");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
}

$("camera-enroll").addEventListener("click", async () => enroll(await frame(), "camera.jpg"));
$("camera-identify").addEventListener("click", async () => identify(await frame(), "camera.jpg"));

// -- token -----------------------------------------------------------------------------------------------------

$("token-save").addEventListener("click", async () => {
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  showError("");
  await loadPeople();
  if (!$("error").textContent) $("token-row").classList.remove("shown");
});

$("people-refresh").addEventListener("click", loadPeople);
loadPeople();
