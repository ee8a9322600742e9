"""Pure-numpy numerics of the service (no HTTP here).

- softmax.py        softmax, log-softmax, 1 − a, the Jacobian a_i(δ_ij − a_j)
- cross_entropy.py  effective targets q, per-sample losses, the gradient a·Σq − q, reductions
- finite_diff.py    forward / central / five-point / complex-step derivatives, batched by column
- compare.py        the tolerance verdict and cs231n's relative error
- gradcheck.py      one whole check: everything above, composed
"""
