// Canvas plots for the explorer: heatmaps with a colour legend, probability bars, tooltips.
// No libraries: every plot is drawn with the 2D canvas API.

const FONT = "12px system-ui, sans-serif";
const SMALL_FONT = "11px system-ui, sans-serif";
const INK = "#1d2733";
const MUTED = "#5b6776";

// ColorBrewer RdBu (negative blue, zero near white, positive red) and YlOrRd (small pale, large red).
const DIVERGING = ["#2166ac", "#67a9cf", "#f7f7f7", "#ef8a62", "#b2182b"];
const SEQUENTIAL = ["#ffffcc", "#fed976", "#fd8d3c", "#e31a1c", "#800026"];
const NON_FINITE = [150, 150, 150]; // NaN and ±Infinity in a user's values: grey

function hexToRgb(hex) {
  const value = parseInt(hex.slice(1), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}

function interpolate(stops, t) {
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const a = hexToRgb(stops[i]);
  const b = hexToRgb(stops[i + 1]);
  const f = x - i;
  return a.map((v, k) => Math.round(v + (b[k] - v) * f));
}

function rgb(channels) {
  return `rgb(${channels[0]}, ${channels[1]}, ${channels[2]})`;
}

function inkFor(channels) {
  const luminance = 0.299 * channels[0] + 0.587 * channels[1] + 0.114 * channels[2];
  return luminance > 140 ? INK : "#ffffff";
}

/** A symmetric scale around 0 for signed values: blue < 0 < red. */
export function divergingScale(maxAbs) {
  const bound = maxAbs > 0 ? maxAbs : 1;
  return {
    kind: "diverging",
    min: -bound,
    max: bound,
    colour: (v) => interpolate(DIVERGING, (v / bound + 1) / 2),
  };
}

/**
 * A log10 scale for non-negative values (errors) whose range also covers `reference` (atol),
 * marked on the legend: errors far below it look pale, errors above it dark red.
 * Zeros get the palest colour.
 */
export function logScale(values, reference, referenceLabel) {
  const positive = values.filter((v) => v > 0);
  const bounds = reference > 0 ? [...positive, reference] : positive;
  let hi = bounds.length ? Math.ceil(Math.log10(Math.max(...bounds))) : -15;
  let lo = bounds.length ? Math.floor(Math.log10(Math.min(...bounds))) : -16;
  if (hi <= lo) hi = lo + 1;
  lo = Math.max(lo, hi - 17);
  return {
    kind: "log",
    min: lo,
    max: hi,
    marks: reference > 0 ? [[reference, referenceLabel]] : [],
    colour: (v) => interpolate(SEQUENTIAL, v > 0 ? (Math.log10(v) - lo) / (hi - lo) : 0),
  };
}

/** Size the canvas for CSS pixels and return a context that draws in CSS pixels. */
function prepare(canvas, width, height) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  return context;
}

/** A short number for a cell: 3 significant digits, exponent when very small or large. */
export function formatNumber(v) {
  if (v === null || v === undefined) return "–";
  if (v === 0) return "0";
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "−∞";
  const magnitude = Math.abs(v);
  if (magnitude < 1e-2 || magnitude >= 1e4) return v.toExponential(1).replace("e-", "e−");
  return v.toPrecision(3).replace(/\.?0+$/, "");
}

function cellSize(columns, available) {
  return Math.max(14, Math.min(56, Math.floor(available / Math.max(1, columns))));
}

/**
 * Draw `matrix` (rows × columns) as coloured cells with row and column indices.
 * `outline[r][c]` true draws a thick frame (a failing element) in `outlineColour`, and the
 * canvas's `data-outlined` counts them; `format` writes a cell's value
 * when the cells are wide enough. Returns the cell geometry,
 * which `attachTooltip` uses.
 */
export function drawHeatmap(
  canvas,
  matrix,
  { scale, rowName, columnName, outline, available, format = formatNumber, outlineColour = INK },
) {
  const rows = matrix.length;
  const columns = rows ? matrix[0].length : 0;
  const cell = cellSize(columns, (available || 320) - 40);
  const left = 34;
  const top = 20;
  const context = prepare(canvas, left + columns * cell + 4, top + rows * cell + 4);
  context.font = SMALL_FONT;
  context.textAlign = "center";
  context.textBaseline = "middle";
  context.fillStyle = MUTED;
  for (let c = 0; c < columns; c += 1) context.fillText(String(c), left + (c + 0.5) * cell, top / 2);
  context.textAlign = "right";
  for (let r = 0; r < rows; r += 1) context.fillText(String(r), left - 6, top + (r + 0.5) * cell);
  context.textAlign = "center";
  for (let r = 0; r < rows; r += 1) {
    for (let c = 0; c < columns; c += 1) {
      const value = matrix[r][c];
      const colour =
        value === null || value === undefined || Number.isFinite(value)
          ? scale.colour(value ?? 0)
          : NON_FINITE;
      context.fillStyle = rgb(colour);
      context.fillRect(left + c * cell, top + r * cell, cell, cell);
      if (cell >= 44) {
        context.fillStyle = inkFor(colour);
        context.fillText(format(value), left + (c + 0.5) * cell, top + (r + 0.5) * cell);
      }
    }
  }
  context.strokeStyle = "rgba(29, 39, 51, 0.25)";
  context.lineWidth = 1;
  context.strokeRect(left + 0.5, top + 0.5, columns * cell - 1, rows * cell - 1);
  let outlined = 0;
  if (outline) {
    context.strokeStyle = outlineColour;
    context.lineWidth = 3;
    for (let r = 0; r < rows; r += 1) {
      for (let c = 0; c < columns; c += 1) {
        if (outline[r] && outline[r][c]) {
          outlined += 1;
          context.strokeRect(left + c * cell + 1.5, top + r * cell + 1.5, cell - 3, cell - 3);
        }
      }
    }
  }
  const geometry = { left, top, cell, rows, columns, matrix, rowName, columnName };
  canvas.plotGeometry = geometry;
  canvas.dataset.outlined = String(outlined);
  return geometry;
}

/** A vertical colour bar for `scale` with its bounds (10^k labels for a log scale). */
export function drawLegend(canvas, scale, height) {
  const barHeight = Math.max(120, Math.min(220, height - 24));
  const context = prepare(canvas, 100, barHeight + 24);
  const x = 6;
  const y = 12;
  for (let i = 0; i < barHeight; i += 1) {
    const t = 1 - i / (barHeight - 1);
    const value =
      scale.kind === "log"
        ? 10 ** (scale.min + t * (scale.max - scale.min))
        : scale.min + t * (scale.max - scale.min);
    context.fillStyle = rgb(scale.colour(value));
    context.fillRect(x, y + i, 14, 1);
  }
  context.strokeStyle = "rgba(29, 39, 51, 0.4)";
  context.strokeRect(x + 0.5, y + 0.5, 13, barHeight - 1);
  context.font = SMALL_FONT;
  context.fillStyle = INK;
  context.textAlign = "left";
  context.textBaseline = "middle";
  const ticks =
    scale.kind === "log"
      ? [
          [0, `1e${scale.max}`],
          [1, `1e${scale.min}`],
        ]
      : [
          [0, formatNumber(scale.max)],
          [0.5, "0"],
          [1, formatNumber(scale.min)],
        ];
  const marks = (scale.marks || []).map(([value, label]) => [
    y + (1 - (Math.log10(value) - scale.min) / (scale.max - scale.min)) * (barHeight - 1),
    label,
  ]);
  for (const [t, label] of ticks) {
    const ty = y + t * (barHeight - 1);
    context.fillRect(x + 14, ty, 4, 1);
    if (marks.every(([my]) => Math.abs(my - ty) > 12)) context.fillText(label, x + 22, ty);
  }
  context.font = `bold ${SMALL_FONT}`;
  for (const [my, label] of marks) {
    context.fillRect(x - 4, my, 22, 2);
    context.fillText(label, x + 22, my);
  }
}

/**
 * Probability bars: one row per sample, one bar per class; `targets[n]` (summing to 1 or all
 * zero) is drawn as an outline over each bar.
 */
export function drawBars(canvas, probabilities, targets, available) {
  const rows = probabilities.length;
  const columns = rows ? probabilities[0].length : 0;
  const barWidth = Math.max(12, Math.min(64, Math.floor(((available || 320) - 80) / columns)));
  const rowHeight = 96;
  const left = 70;
  const plotHeight = 64;
  const context = prepare(canvas, left + columns * barWidth + 8, rows * rowHeight + 4);
  context.font = FONT;
  for (let n = 0; n < rows; n += 1) {
    const base = n * rowHeight + 14 + plotHeight;
    context.fillStyle = MUTED;
    context.textAlign = "left";
    context.textBaseline = "middle";
    context.fillText(`sample ${n}`, 4, base - plotHeight / 2);
    context.strokeStyle = "rgba(29, 39, 51, 0.3)";
    context.beginPath();
    context.moveTo(left, base + 0.5);
    context.lineTo(left + columns * barWidth, base + 0.5);
    context.moveTo(left, base - plotHeight + 0.5);
    context.lineTo(left + columns * barWidth, base - plotHeight + 0.5);
    context.stroke();
    for (let c = 0; c < columns; c += 1) {
      const p = probabilities[n][c];
      const x = left + c * barWidth + 2;
      const width = barWidth - 4;
      context.fillStyle = "#4a7fb5";
      context.fillRect(x, base - p * plotHeight, width, p * plotHeight);
      const target = targets[n] ? targets[n][c] : 0;
      if (target > 0) {
        context.strokeStyle = "#d9822b";
        context.lineWidth = 2;
        context.strokeRect(x + 1, base - target * plotHeight + 1, width - 2, target * plotHeight - 1);
      }
      context.fillStyle = MUTED;
      context.textAlign = "center";
      context.textBaseline = "top";
      context.font = SMALL_FONT;
      context.fillText(String(c), x + width / 2, base + 3);
      if (barWidth >= 36) {
        context.fillStyle = INK;
        context.textBaseline = "bottom";
        context.fillText(formatNumber(p), x + width / 2, base - plotHeight - 1);
      }
      context.font = FONT;
    }
  }
  canvas.plotGeometry = {
    left,
    top: 14,
    cell: barWidth,
    rowHeight,
    rows,
    columns,
    matrix: probabilities,
    rowName: "sample",
    columnName: "class",
  };
}

/** Show the value under the pointer of a plotted canvas in `tooltip`. */
export function attachTooltip(canvas, tooltip, describe) {
  canvas.addEventListener("mousemove", (event) => {
    const g = canvas.plotGeometry;
    if (!g) return;
    const box = canvas.getBoundingClientRect();
    const x = event.clientX - box.left - g.left;
    const y = event.clientY - box.top - g.top;
    const c = Math.floor(x / g.cell);
    const r = Math.floor(y / (g.rowHeight || g.cell));
    if (c < 0 || r < 0 || c >= g.columns || r >= g.rows) {
      tooltip.hidden = true;
      return;
    }
    tooltip.textContent = describe(r, c, g);
    tooltip.style.left = `${event.pageX + 12}px`;
    tooltip.style.top = `${event.pageY + 12}px`;
    tooltip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => {
    tooltip.hidden = true;
  });
}
