// The explorer: editable logits, labels and options; every change (debounced) asks
// POST v1/cross-entropy and redraws the probabilities, the Jacobian, the Hessian (with its
// eigenvalues, computed here) and the gradient check.
// Validation is the API's: its 422 messages are shown next to the field they name.

import {
  attachTooltip,
  divergingScale,
  drawBars,
  drawHeatmap,
  drawLegend,
  formatNumber,
  logScale,
} from "./plot.js";
import { symmetricEigen } from "./linalg.js";

const API_PATH = "v1/cross-entropy";
const API_KEY_STORAGE = "gradcheck-api-key";
const DEBOUNCE_MS = 250;
const MAX_SAMPLES = 8;
const MAX_CLASSES = 12;
const BASE_INCLUDE = ["probabilities", "loss", "gradient", "numeric_gradient", "jacobian", "hessian"];
const DEFAULT_OPTIONS = {
  reduction: "mean",
  label_smoothing: "0",
  ignore_index: "-100",
  dtype: "float64",
  method: "central",
  step: "",
  atol: "1e-5",
  rtol: "1e-3",
};

const $ = (id) => document.getElementById(id);

const state = {
  logits: [
    ["2", "1", "0.1"],
    ["0.5", "2.5", "-1"],
  ],
  labelMode: "index",
  indexLabels: ["0", "1"],
  probabilityLabels: [
    ["1", "0", "0"],
    ["0", "1", "0"],
  ],
  weight: ["1", "1", "1"],
  useWeight: false,
  sample: 0,
  lastResult: null,
  lastBody: null,
};

let timer = null;
let controller = null;
let sequence = 0;

// ---------- numbers in and out ----------

/** Parse a cell: a number, or inf/-inf/nan words (sent as JSON literals the API judges). */
function parseNumber(text) {
  const t = text.trim().toLowerCase();
  if (t === "") return { error: "enter a number" };
  if (/^-(inf|infinity)$/.test(t)) return { value: -Infinity };
  if (/^\+?(inf|infinity)$/.test(t)) return { value: Infinity };
  if (t === "nan") return { value: NaN };
  const value = Number(t);
  return Number.isNaN(value) ? { error: `"${text.trim()}" is not a number` } : { value };
}

/** JSON text that keeps -Infinity/Infinity/NaN as the literals the API reads and judges. */
function toJson(value) {
  if (typeof value === "number") {
    if (Number.isFinite(value)) return JSON.stringify(value);
    if (Number.isNaN(value)) return "NaN";
    return value > 0 ? "Infinity" : "-Infinity";
  }
  if (Array.isArray(value)) return `[${value.map(toJson).join(",")}]`;
  if (value && typeof value === "object") {
    const members = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}:${toJson(v)}`);
    return `{${members.join(",")}}`;
  }
  return JSON.stringify(value);
}

// ---------- the editable grids ----------

function numberInput(value, loc, label, onInput) {
  const input = document.createElement("input");
  input.type = "text";
  input.inputMode = "decimal";
  input.value = value;
  input.dataset.loc = loc;
  input.setAttribute("aria-label", label);
  input.addEventListener("input", () => {
    onInput(input.value);
    schedule();
  });
  return input;
}

function renderGrid(table, matrix, field, rowTitle, onInput) {
  table.replaceChildren();
  const header = table.insertRow();
  header.appendChild(document.createElement("th"));
  const columns = matrix.length ? matrix[0].length : 0;
  for (let c = 0; c < columns; c += 1) {
    const th = document.createElement("th");
    th.textContent = `c${c}`;
    header.appendChild(th);
  }
  matrix.forEach((row, n) => {
    const tr = table.insertRow();
    const th = document.createElement("th");
    th.textContent = rowTitle(n);
    tr.appendChild(th);
    row.forEach((value, c) => {
      const cell = tr.insertCell();
      const label = `${field} sample ${n} class ${c}`;
      cell.appendChild(numberInput(value, `${field}.${n}.${c}`, label, (v) => onInput(n, c, v)));
    });
  });
}

function renderIndexLabels(table) {
  table.replaceChildren();
  state.indexLabels.forEach((value, n) => {
    const tr = table.insertRow();
    const th = document.createElement("th");
    th.textContent = `y${n}`;
    tr.appendChild(th);
    const cell = tr.insertCell();
    const input = numberInput(value, `labels.${n}`, `label of sample ${n}`, (v) => {
      state.indexLabels[n] = v;
    });
    cell.appendChild(input);
  });
}

function renderWeight() {
  const table = $("weight-grid");
  table.replaceChildren();
  const tr = table.insertRow();
  state.weight.forEach((value, c) => {
    const cell = tr.insertCell();
    const input = numberInput(value, `weight.${c}`, `weight of class ${c}`, (v) => {
      state.weight[c] = v;
    });
    input.disabled = !state.useWeight;
    cell.appendChild(input);
  });
}

function renderInputs() {
  renderGrid($("logits-grid"), state.logits, "logits", (n) => `z${n}`, (n, c, v) => {
    state.logits[n][c] = v;
  });
  if (state.labelMode === "index") {
    renderIndexLabels($("labels-grid"));
  } else {
    renderGrid($("labels-grid"), state.probabilityLabels, "labels", (n) => `p${n}`, (n, c, v) => {
      state.probabilityLabels[n][c] = v;
    });
  }
  renderWeight();
  for (const radio of document.querySelectorAll("input[name=label-mode]")) {
    radio.checked = radio.value === state.labelMode;
  }
  $("use-weight").checked = state.useWeight;
  $("add-sample").disabled = state.logits.length >= MAX_SAMPLES;
  $("remove-sample").disabled = state.logits.length <= 1;
  $("add-class").disabled = state.logits[0].length >= MAX_CLASSES;
  $("remove-class").disabled = state.logits[0].length <= 2;
}

function resize(addSamples, addClasses) {
  if (addSamples > 0) {
    state.logits.push([...state.logits[state.logits.length - 1]]);
    state.indexLabels.push("0");
    state.probabilityLabels.push(state.logits[0].map((_, c) => (c === 0 ? "1" : "0")));
  } else if (addSamples < 0) {
    state.logits.pop();
    state.indexLabels.pop();
    state.probabilityLabels.pop();
  }
  if (addClasses > 0) {
    for (const row of state.logits) row.push("0");
    for (const row of state.probabilityLabels) row.push("0");
    state.weight.push("1");
  } else if (addClasses < 0) {
    for (const row of state.logits) row.pop();
    for (const row of state.probabilityLabels) row.pop();
    state.weight.pop();
  }
  renderInputs();
  schedule();
}

function switchLabelMode(mode) {
  const classes = state.logits[0].length;
  if (mode === "probabilities") {
    state.probabilityLabels = state.indexLabels.map((label) =>
      Array.from({ length: classes }, (_, c) => (String(c) === label.trim() ? "1" : "0")),
    );
  } else {
    state.indexLabels = state.probabilityLabels.map((row) => {
      const values = row.map((v) => Number(v) || 0);
      return String(values.indexOf(Math.max(...values)));
    });
  }
  state.labelMode = mode;
  renderInputs();
  schedule();
}

// ---------- presets: the API's own named examples ----------

function setOptions(options) {
  for (const [name, value] of Object.entries(options)) $(name).value = value;
}

function applyExample(value) {
  const logits = Array.isArray(value.logits[0]) ? value.logits : [value.logits];
  state.logits = logits.map((row) => row.map(String));
  const classes = logits[0].length;
  let labels = value.labels;
  if (typeof labels === "number") labels = [labels];
  if (!Array.isArray(value.logits[0]) && Array.isArray(labels) && labels.length === classes) {
    labels = [labels];
  }
  if (Array.isArray(labels[0])) {
    state.labelMode = "probabilities";
    state.probabilityLabels = labels.map((row) => row.map(String));
    state.indexLabels = labels.map(() => "0");
  } else {
    state.labelMode = "index";
    state.indexLabels = labels.map(String);
    state.probabilityLabels = logits.map(() => logits[0].map((_, c) => (c === 0 ? "1" : "0")));
  }
  state.useWeight = Array.isArray(value.weight);
  state.weight = state.useWeight ? value.weight.map(String) : logits[0].map(() => "1");
  const numeric = value.numeric || {};
  const tolerance = value.tolerance || {};
  setOptions({
    ...DEFAULT_OPTIONS,
    reduction: value.reduction ?? DEFAULT_OPTIONS.reduction,
    label_smoothing: String(value.label_smoothing ?? DEFAULT_OPTIONS.label_smoothing),
    ignore_index: String(value.ignore_index ?? DEFAULT_OPTIONS.ignore_index),
    dtype: value.dtype ?? DEFAULT_OPTIONS.dtype,
    method: numeric.method ?? DEFAULT_OPTIONS.method,
    step: numeric.step === undefined ? "" : String(numeric.step),
    atol: String(tolerance.atol ?? DEFAULT_OPTIONS.atol),
    rtol: String(tolerance.rtol ?? DEFAULT_OPTIONS.rtol),
  });
  renderInputs();
  schedule();
}

// ---------- the API key, when the service requires one ----------

function showApiKeyField() {
  $("api-key-field").hidden = false;
}

function wireApiKey() {
  const input = $("api-key");
  input.value = sessionStorage.getItem(API_KEY_STORAGE) ?? "";
  if (input.value) showApiKeyField();
  input.addEventListener("input", () => {
    sessionStorage.setItem(API_KEY_STORAGE, input.value);
    schedule();
  });
}

async function loadPresets() {
  const response = await fetch("openapi.json");
  if (!response.ok) return;
  const spec = await response.json();
  if (spec.components?.securitySchemes?.APIKey) showApiKeyField();
  const examples =
    spec.paths?.["/v1/cross-entropy"]?.post?.requestBody?.content?.["application/json"]
      ?.examples ?? {};
  const select = $("preset");
  for (const [name, example] of Object.entries(examples)) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = example.summary || name;
    select.appendChild(option);
  }
  select.addEventListener("change", () => {
    if (examples[select.value]) applyExample(examples[select.value].value);
  });
}

// ---------- your own values (the candidate) ----------

const CANDIDATE_OUTPUTS = ["gradient", "jacobian", "hessian", "probabilities"];
/** Outputs with one C × C block per sample: the page shows the selected sample's block. */
const PER_SAMPLE_BLOCKS = new Set(["jacobian", "hessian"]);
const NON_FINITE = { NaN, Infinity, "-Infinity": -Infinity };

/** JSON with NaN, Infinity and -Infinity (also nan, inf, -inf) read as those numbers. */
function parseCandidate(text) {
  const marked = text.replace(/(-?)\b(infinity|inf|nan)\b/gi, (_, sign, word) =>
    word.toLowerCase() === "nan" ? '"\\u0000NaN"' : `"\\u0000${sign}Infinity"`,
  );
  return JSON.parse(marked, (_, value) =>
    typeof value === "string" && value.startsWith("\u0000") ? NON_FINITE[value.slice(1)] : value,
  );
}

/** {output: value} of the non-empty candidate boxes; a box that is not JSON is left out and
 * its reading error shown under it (the rest of the request still goes). */
function readCandidate() {
  const candidate = {};
  for (const output of CANDIDATE_OUTPUTS) {
    const box = $(`candidate-${output}`);
    const text = box.value.trim();
    box.classList.remove("invalid");
    if (!text) continue;
    try {
      candidate[output] = parseCandidate(text);
    } catch (error) {
      box.classList.add("invalid");
      const slot = document.querySelector(`[data-error-for="candidate.${output}"]`);
      const line = document.createElement("span");
      line.textContent = `Not read (not a JSON array): ${error.message}`;
      slot.appendChild(line);
    }
  }
  return Object.keys(candidate).length ? candidate : null;
}

// ---------- the request ----------

function buildRequest() {
  const errors = [];
  const number = (text, loc) => {
    const parsed = parseNumber(text);
    if (parsed.error) errors.push({ loc, msg: parsed.error });
    return parsed.value;
  };
  const body = {
    logits: state.logits.map((row, n) => row.map((v, c) => number(v, ["logits", n, c]))),
  };
  if (state.labelMode === "index") {
    body.labels = state.indexLabels.map((v, n) => {
      const t = v.trim();
      return /^-?\d+$/.test(t) ? parseInt(t, 10) : number(t, ["labels", n]);
    });
  } else {
    body.labels = state.probabilityLabels.map((row, n) =>
      row.map((v, c) => number(v, ["labels", n, c])),
    );
  }
  if (state.useWeight) body.weight = state.weight.map((v, c) => number(v, ["weight", c]));
  body.reduction = $("reduction").value;
  body.label_smoothing = number($("label_smoothing").value, ["label_smoothing"]);
  const ignore = $("ignore_index").value.trim();
  if (/^-?\d+$/.test(ignore)) body.ignore_index = parseInt(ignore, 10);
  else errors.push({ loc: ["ignore_index"], msg: "ignore_index must be an integer" });
  body.dtype = $("dtype").value;
  body.numeric = { method: $("method").value };
  if ($("step").value.trim() !== "") body.numeric.step = number($("step").value, ["numeric", "step"]);
  body.tolerance = {
    atol: number($("atol").value, ["tolerance", "atol"]),
    rtol: number($("rtol").value, ["tolerance", "rtol"]),
  };
  body.include = [...BASE_INCLUDE];
  if ($("check-jacobian").checked) body.include.push("numeric_jacobian");
  if ($("check-hessian").checked) body.include.push("numeric_hessian");
  const candidate = readCandidate();
  if (candidate) body.candidate = candidate;
  return { body, errors };
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = `status ${kind}`;
  document.body.dataset.state = kind;
}

function schedule() {
  clearTimeout(timer);
  setStatus("Updating…", "pending");
  timer = setTimeout(update, DEBOUNCE_MS);
}

async function update() {
  clearErrors();
  const { body, errors } = buildRequest();
  if (errors.length) {
    showErrors(errors);
    return;
  }
  if (controller) controller.abort();
  controller = new AbortController();
  sequence += 1;
  const mine = sequence;
  let response;
  let payload;
  try {
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    const key = $("api-key").value.trim();
    if (key) headers["X-API-Key"] = key;
    response = await fetch(API_PATH, {
      method: "POST",
      headers,
      body: toJson(body),
      signal: controller.signal,
    });
    payload = await response.json();
  } catch (error) {
    if (error.name !== "AbortError") setStatus(`The service did not answer: ${error.message}`, "error");
    return;
  }
  if (mine !== sequence) return;
  if (response.ok) {
    state.lastResult = payload;
    state.lastBody = body;
    render();
    const updates = Number(document.body.dataset.updates || 0) + 1;
    document.body.dataset.updates = String(updates);
    setStatus(`Computed by the API: N = ${payload.batch_size}, C = ${payload.num_classes}, ${payload.dtype}.`, "ready");
  } else if (response.status === 401) {
    showKeyNeeded(payload.detail);
  } else if (Array.isArray(payload.detail)) {
    showErrors(payload.detail.map((item) => ({ loc: item.loc.slice(1), msg: item.msg })));
  } else {
    showErrors([{ loc: [], msg: `${response.status}: ${payload.detail}` }]);
  }
}

// ---------- errors next to their field ----------

/** A 401: the key is missing or wrong. Said next to the key field, not as an input problem. */
function showKeyNeeded(detail) {
  showApiKeyField();
  const input = $("api-key");
  const typed = input.value.trim() !== "";
  input.classList.add("invalid");
  const line = document.createElement("span");
  line.textContent = typed
    ? `${detail} Check the key typed here.`
    : "This service needs an API key: type it here to compute.";
  $("api-key-error").replaceChildren(line);
  setStatus(
    typed
      ? "The API key was refused: check it under \u201cAPI key\u201d."
      : "An API key is needed: type it under \u201cAPI key\u201d.",
    "invalid",
  );
  if (!typed) input.focus();
}

function clearErrors() {
  for (const slot of document.querySelectorAll("[data-error-for]")) slot.replaceChildren();
  for (const input of document.querySelectorAll(".invalid")) input.classList.remove("invalid");
}

function describeLocation(loc) {
  const [field, n, c] = loc;
  if ((field === "logits" || field === "labels") && n !== undefined) {
    return c !== undefined ? `sample ${n}, class ${c}: ` : `sample ${n}: `;
  }
  if (field === "weight" && n !== undefined) return `class ${n}: `;
  return "";
}

function showErrors(items) {
  for (const { loc, msg } of items) {
    const path = loc.map(String);
    const input = document.querySelector(`[data-loc="${CSS.escape(path.join("."))}"]`);
    if (input) input.classList.add("invalid");
    let slot = null;
    for (let k = path.length; k >= 0 && !slot; k -= 1) {
      slot = document.querySelector(`[data-error-for="${CSS.escape(path.slice(0, k).join("."))}"]`);
    }
    const line = document.createElement("span");
    line.textContent = describeLocation(loc) + msg;
    slot.appendChild(line);
  }
  const count = items.length;
  setStatus(
    `The API refused the input (${count} problem${count === 1 ? "" : "s"}, marked in red); the plots show the last valid input.`,
    "invalid",
  );
}

// ---------- drawing ----------

/** An error's order of magnitude, short enough for a small cell: "2e−11". */
function formatMagnitude(v) {
  return v === 0 ? "0" : v.toExponential(0).replace("e-", "e−");
}

function availableWidth(canvas) {
  return canvas.closest(".panel").clientWidth - 32;
}

function targetsForBars(result) {
  if (state.labelMode === "probabilities") {
    return state.probabilityLabels.map((row) => {
      const values = row.map((v) => Math.max(0, Number(v) || 0));
      const total = values.reduce((a, b) => a + b, 0);
      return total > 0 ? values.map((v) => v / total) : values;
    });
  }
  const ignore = Number($("ignore_index").value);
  return state.indexLabels.map((label) => {
    const y = Number(label);
    return Array.from({ length: result.num_classes }, (_, c) => (c === y && y !== ignore ? 1 : 0));
  });
}

function renderVerdict(element, name, check) {
  element.replaceChildren();
  element.className = "verdict";
  if (!check) return;
  element.classList.add(check.passed ? "pass" : "fail");
  const title = document.createElement("strong");
  title.textContent = `${name} check ${check.passed ? "passed" : "failed"}`;
  const detail = document.createElement("span");
  detail.textContent = ` — ${check.message.replace(/^(passed|failed): /, "")}`;
  element.append(title, detail);
}

function renderLoss(result) {
  const losses = result.losses.map(formatNumber).join(", ");
  const loss = Array.isArray(result.loss) ? `[${result.loss.map(formatNumber).join(", ")}]` : formatNumber(result.loss);
  $("loss").textContent = `loss (${result.reduction}) = ${loss}; per-sample losses L_n = [${losses}]`;
}

const SAMPLE_SELECTS = ["jacobian-sample", "hessian-sample"];

/** The sample whose Jacobian and Hessian blocks are shown (one choice, two selects). */
function selectedSample(result) {
  return Math.min(state.sample ?? 0, result.batch_size - 1);
}

function renderSampleSelects(result) {
  const chosen = selectedSample(result);
  for (const id of SAMPLE_SELECTS) {
    const select = $(id);
    select.replaceChildren();
    for (let n = 0; n < result.batch_size; n += 1) {
      const option = document.createElement("option");
      option.value = String(n);
      option.textContent = String(n);
      select.appendChild(option);
    }
    select.value = String(chosen);
  }
}

/** Draw the selected sample's C × C block of `name` (jacobian, hessian) on the canvas of that
 * id, with its legend, outlining the entries of your own values outside the tolerance; returns
 * the block. */
function renderBlock(result, name) {
  const chosen = selectedSample(result);
  const matrix = result[name][chosen];
  const finite = matrix.flat().filter(Number.isFinite).map(Math.abs);
  const scale = divergingScale(Math.max(0, ...finite));
  const canvas = $(name);
  const failing = candidateFailing(name, result);
  drawHeatmap(canvas, matrix, {
    scale,
    rowName: "i",
    columnName: "j",
    available: availableWidth(canvas) - 110,
    outline: failing ? failing[chosen] : undefined,
    outlineColour: CANDIDATE_OUTLINE,
  });
  drawLegend($(`${name}-legend`), scale, canvas.clientHeight);
  return matrix;
}

function renderJacobian(result) {
  renderBlock(result, "jacobian");
}

// ---------- the Hessian and its eigenvalues ----------

/** Relative size below which an eigenvalue counts as 0 (rounding of the C × C block). */
const EIGEN_ZERO = 1e-12;

function renderHessian(result) {
  const matrix = renderBlock(result, "hessian");
  renderEigenvalues(result, selectedSample(result), matrix);
}

/** s = Σ_c q_c / D of sample n, read off as trace(H_n) / trace(J_n) (J_n = diag a − a·aᵀ);
 * null when the row is saturated (a one-hot, J_n = 0) and s cannot be read. */
function hessianFactor(result, n) {
  const trace = (m) => m.reduce((sum, row, i) => sum + row[i], 0);
  const j = trace(result.jacobian[n]);
  const h = trace(result.hessian[n]);
  return j > 1e-300 && Number.isFinite(h) ? h / j : null;
}

/** Negative class weights of the current input, as "w0 = −1" texts (none without weights). */
function negativeWeights() {
  if (!state.useWeight) return [];
  return state.weight
    .map((text, c) => [c, Number(text)])
    .filter(([, w]) => w < 0)
    .map(([c, w]) => `w${c} = ${formatNumber(w)}`);
}

function renderEigenvalues(result, n, matrix) {
  const list = $("hessian-eigenvalues");
  const note = $("hessian-eigen-note");
  const decomposition = symmetricEigen(matrix);
  list.dataset.state = decomposition.status;
  list.dataset.sample = String(n);
  note.textContent = "";
  if (decomposition.status !== "ok") {
    delete list.dataset.eigenvalues;
    const li = listItem("too-large");
    li.textContent =
      decomposition.status === "too-large"
        ? `C = ${decomposition.size}: too large to decompose here (this page decomposes up to a few dozen classes).`
        : "Not decomposed: the block has NaN or ±Infinity entries.";
    list.replaceChildren(li);
    renderHessianExplanation(result, n, null);
    return;
  }
  const { values, vectors } = decomposition;
  const largest = Math.max(...values.map(Math.abs));
  const zero = EIGEN_ZERO * (largest > 0 ? largest : 1);
  list.dataset.eigenvalues = JSON.stringify(values);
  list.replaceChildren(
    ...values.map((value) => {
      const kind = Math.abs(value) <= zero ? "zero" : value < 0 ? "negative" : "positive";
      const li = listItem(kind);
      li.textContent = `λ = ${formatNumber(value)}`;
      li.title = String(value);
      return li;
    }),
  );
  const zeros = values.map((v, k) => [v, k]).filter(([v]) => Math.abs(v) <= zero);
  if (zeros.length === 1) {
    const v = vectors[zeros[0][1]];
    const cosine = Math.abs(v.reduce((a, b) => a + b, 0)) / Math.sqrt(v.length);
    note.textContent =
      `The eigenvalue ≈ 0 (${formatNumber(zeros[0][0])}) has its eigenvector along (1, …, 1): ` +
      `|cos| with (1, …, 1)/√C = ${cosine.toFixed(6)}.`;
  } else if (zeros.length > 1) {
    note.textContent =
      `${zeros.length} eigenvalues ≈ 0: (1, …, 1) and, for each class with a = 0 (masked by ` +
      "−inf or saturated), that class's own direction.";
  }
  renderHessianExplanation(result, n, values.filter((v) => v < -zero).length);
}

function renderHessianExplanation(result, n, negatives) {
  const general =
    "H = s·(diag a − a·aᵀ) with s = Σ_c q_c / D: with non-negative targets (s ≥ 0) it is " +
    "positive semi-definite with a zero eigenvalue along (1, …, 1) — adding one constant to " +
    "every logit changes nothing, and the loss is convex in the logits; a negative class weight " +
    "can make s < 0 and flip every eigenvalue's sign, so negative eigenvalues appear (directions " +
    "along which the loss is concave).";
  const weights = negativeWeights();
  const s = hessianFactor(result, n);
  let current =
    weights.length === 0
      ? "This problem has no negative class weights"
      : `This problem has negative class weights (${weights.join(", ")})`;
  if (s === null) {
    current += `; sample ${n}'s probabilities are saturated (a one-hot), so its block is 0`;
  } else if (weights.length === 0) {
    current += ` (sample ${n}: s = ${formatNumber(s)}${s < 0 ? " < 0" : " ≥ 0"})`;
  } else {
    current += `; for sample ${n}, s = ${formatNumber(s)}${s < 0 ? " < 0" : " ≥ 0"}`;
  }
  if (negatives === null) {
    current += ".";
  } else if (negatives > 0) {
    current += `: this block has ${negatives} negative eigenvalue${negatives === 1 ? "" : "s"}, so it is not positive semi-definite.`;
  } else {
    current += ": every eigenvalue of this block is ≥ 0 up to rounding — positive semi-definite.";
  }
  const explanation = $("hessian-explanation");
  const strong = document.createElement("strong");
  strong.textContent = current;
  explanation.replaceChildren(`${general} `, strong);
  explanation.dataset.negativeWeights = String(weights.length > 0);
}

function renderGradients(result) {
  const analytic = result.gradient;
  const numeric = result.numeric_gradient;
  const { atol, rtol } = result.gradient_check;
  const error = analytic.map((row, n) => row.map((v, c) => Math.abs(v - numeric[n][c])));
  const failing = error.map((row, n) => row.map((e, c) => e > atol + rtol * Math.abs(numeric[n][c])));
  const maxAbs = Math.max(...analytic.flat().map(Math.abs), ...numeric.flat().map(Math.abs));
  const scale = divergingScale(maxAbs);
  const available = (availableWidth($("gradient")) - 140) / 2;
  const options = { scale, rowName: "sample", columnName: "class", available };
  const yours = candidateFailing("gradient", result);
  drawHeatmap($("gradient"), analytic, {
    ...options,
    outline: yours ?? undefined,
    outlineColour: CANDIDATE_OUTLINE,
  });
  drawHeatmap($("numeric-gradient"), numeric, options);
  drawLegend($("gradient-legend"), scale, $("gradient").clientHeight);
  const errorScale = logScale(error.flat(), atol, `atol ${formatNumber(atol)}`);
  drawHeatmap($("gradient-error"), error, {
    ...options,
    scale: errorScale,
    outline: failing,
    format: formatMagnitude,
  });
  drawLegend($("error-legend"), errorScale, $("gradient").clientHeight);
}

// ---------- your own values: verdicts on the heatmaps, diagnoses ----------

const CANDIDATE_OUTLINE = "#b3261e";
const CANDIDATE_NAMES = {
  gradient: "gradient",
  jacobian: "Jacobian",
  hessian: "Hessian",
  probabilities: "probabilities",
};

/** Same nested array shape (numbers or null at the leaves)? */
function sameShape(a, b) {
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (!Array.isArray(a)) return true;
  return a.length === b.length && a.every((v, k) => sameShape(v, b[k]));
}

/** Per entry: outside |got − expected| ≤ atol + rtol·|expected| (equal values pass), as the
 * service compares; null where your value could not be compared entry by entry. */
function candidateFailing(output, result) {
  const got = state.lastBody?.candidate?.[output];
  const expected = result[output];
  if (got === undefined || !expected || !sameShape(got, expected)) return null;
  const { atol, rtol } = result.gradient_check;
  const fails = (g, e) => {
    if (Array.isArray(g)) return g.map((v, k) => fails(v, e[k]));
    const exact = e === null ? -Infinity : e;
    if (g === exact) return false;
    if (!Number.isFinite(g) || !Number.isFinite(exact)) return true;
    return Math.abs(g - exact) > atol + rtol * Math.abs(exact);
  };
  return fails(got, expected);
}

/** The message, its trailing docs link made clickable only when it is an http(s) URL. */
function messageNode(text) {
  const span = document.createElement("span");
  const match = text.match(/^([\s\S]*\bSee )(\S+?)(\.?)$/);
  if (match && /^https?:\/\//i.test(match[2])) {
    const link = document.createElement("a");
    link.href = match[2];
    link.textContent = match[2];
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    span.append(match[1], link, match[3]);
  } else {
    span.textContent = text;
  }
  return span;
}

function listItem(className, ...children) {
  const li = document.createElement("li");
  if (className) li.className = className;
  li.append(...children);
  return li;
}

function renderCandidate(result) {
  const box = $("candidate-result");
  const check = result.candidate_check;
  box.hidden = !check;
  const figures = $("candidate-figures");
  figures.replaceChildren();
  if (!check) {
    delete box.dataset.passed;
    return;
  }
  box.dataset.passed = String(check.passed);
  const verdict = $("candidate-verdict");
  verdict.className = `verdict ${check.passed ? "pass" : "fail"}`;
  const title = document.createElement("strong");
  title.textContent = check.passed ? "Your values passed" : "Your values failed";
  const parts = Object.entries(check.outputs).map(([name, o]) =>
    o.defect
      ? `${CANDIDATE_NAMES[name] ?? name}: not read`
      : `${CANDIDATE_NAMES[name] ?? name}: ${o.mismatches} of ${o.checked} entries outside the tolerance` +
        (o.nonfinite ? ` (${o.nonfinite} NaN or ±Infinity)` : ""),
  );
  const { atol, rtol } = check.tolerance;
  verdict.replaceChildren(title, ` — ${parts.join("; ")} (atol ${atol}, rtol ${rtol}).`);

  $("candidate-diagnoses").replaceChildren(
    ...check.diagnoses.map((d) => {
      const code = document.createElement("code");
      code.textContent = d.code;
      const head = document.createElement("div");
      head.className = "diagnosis-message";
      head.append(messageNode(d.message));
      const evidence = document.createElement("div");
      evidence.className = "hint";
      const same = d.indistinguishable_from.length
        ? ` Gives the same numbers here as: ${d.indistinguishable_from.join(", ")}.`
        : "";
      evidence.textContent = `Found in the ${CANDIDATE_NAMES[d.output] ?? d.output} (${d.code}): ${d.evidence}.${same}`;
      const li = listItem("diagnosis", head, evidence);
      li.dataset.code = d.code;
      li.prepend(code, " ");
      return li;
    }),
  );
  const defects = Object.values(check.outputs)
    .filter((o) => o.defect)
    .map((o) => listItem("defect", o.defect));
  $("candidate-notes").replaceChildren(
    ...defects,
    ...check.notes.map((note) => listItem("note", note)),
  );

  const tooltip = $("tooltip");
  const describe = (r, c, g) => `${g.rowName} ${r}, ${g.columnName} ${c}: yours ${formatNumber(g.matrix[r][c])} (${g.matrix[r][c]})`;
  for (const output of Object.keys(check.outputs)) {
    const failing = candidateFailing(output, result);
    if (!failing) continue;
    let mine = state.lastBody.candidate[output];
    let reference = result[output];
    let outline = failing;
    let title = `your ${CANDIDATE_NAMES[output]}`;
    if (PER_SAMPLE_BLOCKS.has(output)) {
      const n = selectedSample(result);
      mine = mine[n];
      reference = reference[n];
      outline = failing[n];
      title += ` (sample ${n})`;
    }
    const finite = reference.flat().filter(Number.isFinite).map(Math.abs);
    const scale = divergingScale(Math.max(0, ...finite));
    const figure = document.createElement("div");
    figure.className = "figure";
    const h3 = document.createElement("h3");
    h3.textContent = title;
    const canvas = document.createElement("canvas");
    canvas.id = `candidate-plot-${output}`;
    canvas.className = "plot";
    figure.append(h3, canvas);
    figures.append(figure);
    const names = PER_SAMPLE_BLOCKS.has(output) ? ["i", "j"] : ["sample", "class"];
    drawHeatmap(canvas, mine, {
      scale,
      rowName: names[0],
      columnName: names[1],
      outline,
      outlineColour: CANDIDATE_OUTLINE,
      available: Math.min(360, availableWidth(figures) / 2),
    });
    attachTooltip(canvas, tooltip, describe);
  }
}

function render() {
  const result = state.lastResult;
  if (!result) return;
  renderVerdict($("gradient-verdict"), "Gradient", result.gradient_check);
  renderVerdict($("jacobian-verdict"), "Jacobian", result.jacobian_check);
  renderVerdict($("hessian-verdict"), "Hessian", result.hessian_check);
  renderLoss(result);
  const bars = $("bars");
  drawBars(bars, result.probabilities, targetsForBars(result), availableWidth(bars));
  renderSampleSelects(result);
  renderJacobian(result);
  renderHessian(result);
  renderGradients(result);
  renderCandidate(result);
}

// ---------- wiring ----------

function wire() {
  $("add-sample").addEventListener("click", () => resize(1, 0));
  $("remove-sample").addEventListener("click", () => resize(-1, 0));
  $("add-class").addEventListener("click", () => resize(0, 1));
  $("remove-class").addEventListener("click", () => resize(0, -1));
  for (const radio of document.querySelectorAll("input[name=label-mode]")) {
    radio.addEventListener("change", () => switchLabelMode(radio.value));
  }
  $("use-weight").addEventListener("change", () => {
    state.useWeight = $("use-weight").checked;
    renderWeight();
    schedule();
  });
  for (const id of [...Object.keys(DEFAULT_OPTIONS), "check-jacobian", "check-hessian"]) {
    $(id).addEventListener("input", schedule);
    $(id).addEventListener("change", schedule);
  }
  $("controls").addEventListener("submit", (event) => event.preventDefault());
  for (const id of SAMPLE_SELECTS) {
    $(id).addEventListener("change", () => {
      state.sample = Number($(id).value) || 0;
      render();
    });
  }
  for (const output of CANDIDATE_OUTPUTS) $(`candidate-${output}`).addEventListener("input", schedule);
  $("candidate-clear").addEventListener("click", () => {
    for (const output of CANDIDATE_OUTPUTS) $(`candidate-${output}`).value = "";
    schedule();
  });
  $("candidate-copy").addEventListener("click", () => {
    if (!state.lastResult) return;
    $("candidate-gradient").value = JSON.stringify(state.lastResult.gradient);
    schedule();
  });
  const tooltip = $("tooltip");
  const describe = (r, c, g) =>
    `${g.rowName} ${r}, ${g.columnName} ${c}: ${formatNumber(g.matrix[r][c])} (${g.matrix[r][c]})`;
  for (const id of ["bars", "jacobian", "hessian", "gradient", "numeric-gradient", "gradient-error"]) {
    attachTooltip($(id), tooltip, describe);
  }
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(render, 150);
  });
}

wire();
wireApiKey();
setOptions(DEFAULT_OPTIONS);
renderInputs();
schedule();
loadPresets().catch(() => {
  // The presets are a convenience; the page works without them.
});
