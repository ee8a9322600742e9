// Small dense linear algebra for the explorer: the eigenvalues of a symmetric matrix by cyclic
// Jacobi rotations. Meant for the C × C Hessian block of one sample (C up to a few dozen);
// larger matrices are refused rather than decomposed, so the page never freezes.

/** The largest C decomposed here; Jacobi costs about 10·C³ operations per call. */
export const EIGEN_MAX_SIZE = 48;

const MAX_SWEEPS = 60;

/**
 * Eigen-decomposition of the symmetric matrix `matrix` (an array of C rows of C numbers).
 * Returns {status: "ok", values, vectors} with `values` ascending and `vectors[k]` the unit
 * eigenvector of `values[k]`; {status: "too-large"} when C > EIGEN_MAX_SIZE;
 * {status: "non-finite"} when an entry is NaN, ±Infinity or null.
 */
export function symmetricEigen(matrix) {
  const n = matrix.length;
  if (n > EIGEN_MAX_SIZE) return { status: "too-large", size: n };
  if (!matrix.every((row) => row.length === n && row.every((v) => Number.isFinite(v)))) {
    return { status: "non-finite", size: n };
  }
  // Work on the symmetric part (the API's blocks are symmetric to the last bit anyway).
  const a = matrix.map((row, i) => row.map((v, j) => (v + matrix[j][i]) / 2));
  const v = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (__, j) => (i === j ? 1 : 0)));
  let norm = 0;
  for (const row of a) for (const x of row) norm += x * x;
  const threshold = norm * 1e-34;
  for (let sweep = 0; sweep < MAX_SWEEPS; sweep += 1) {
    let off = 0;
    for (let p = 0; p < n; p += 1) for (let q = p + 1; q < n; q += 1) off += a[p][q] * a[p][q];
    if (off <= threshold || off === 0) break;
    for (let p = 0; p < n; p += 1) {
      for (let q = p + 1; q < n; q += 1) {
        const apq = a[p][q];
        if (apq === 0) continue;
        // Rotation J (c at pp and qq, s at pq, −s at qp) that zeroes a[p][q] in Jᵀ·A·J.
        const theta = (a[q][q] - a[p][p]) / (2 * apq);
        const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k += 1) {
          const akp = a[k][p];
          const akq = a[k][q];
          a[k][p] = c * akp - s * akq;
          a[k][q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k += 1) {
          const apk = a[p][k];
          const aqk = a[q][k];
          a[p][k] = c * apk - s * aqk;
          a[q][k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k += 1) {
          const vkp = v[k][p];
          const vkq = v[k][q];
          v[k][p] = c * vkp - s * vkq;
          v[k][q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => a[i][i] - a[j][j]);
  return {
    status: "ok",
    size: n,
    values: order.map((i) => a[i][i]),
    vectors: order.map((i) => v.map((row) => row[i])),
  };
}
