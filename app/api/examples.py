"""Named request examples for the OpenAPI document: one click on "Try it out → Execute".

Each example is an OpenAPI Example Object (summary, description, value). Swagger UI offers them
in a drop-down above the request body; ReDoc shows them beside the schema; the explorer page at
/ offers them as presets. `FLOAT32_FAILS` names, for every endpoint, the example whose check is
meant to fail.
"""

from typing import Any

Example = dict[str, Any]

FLOAT32_FAILS = "float32_check_fails"

TWO_SAMPLES = [[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]]
FOUR_CLASSES = [[2.0, -1.0, 0.5, 3.0], [0.3, 1.7, -2.2, 0.9]]
EXTREME = [[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]]
RIGHT_GRADIENT = [[-0.170499, 0.121216, 0.049283], [0.058057, -0.071012, 0.012954]]
"""The gradient of the mean loss of TWO_SAMPLES with labels [0, 1], to six decimals."""
SUMMED_GRADIENT = [[2 * x for x in row] for row in RIGHT_GRADIENT]
MASK_NOTE = (
    " A class can also be masked with the JSON literal `-Infinity` as its logit (the service "
    "reads it; an OpenAPI document cannot hold it, so it is not in this example)."
)
FLOAT32_NOTE = (
    "In float32 (eps ≈ 1.2e-7) a central difference with the fixed step h = 1e-5 that works in "
    "float64 has a rounding error of about eps·|f|/h ≈ 1e-2·|f|, far above atol = 1e-5: the "
    "check fails although the analytic derivative is right. The same request in float64, or "
    "without `numeric.step` (the default step ∛eps·max(1, r)^(1/3) for the row's spread r, "
    "about 1e-2 in float32 here), passes."
)

CROSS_ENTROPY_EXAMPLES: dict[str, Example] = {
    "hard_labels": {
        "summary": "Hard labels (class indices)",
        "description": "Two samples, three classes, labels y = [0, 1]. The targets are one-hot "
        "rows, Σ_c q_nc = 1, so the gradient is (a − y)/N with the default `mean`.",
        "value": {"logits": TWO_SAMPLES, "labels": [0, 1]},
    },
    "soft_labels": {
        "summary": "Soft labels (probability rows summing to 1)",
        "description": "Target distributions p instead of indices. Each row sums to 1, so the "
        "gradient is still (a − p)/N.",
        "value": {"logits": TWO_SAMPLES, "labels": [[0.7, 0.2, 0.1], [0.0, 0.9, 0.1]]},
    },
    "unnormalised_soft_labels": {
        "summary": "Soft labels that do not sum to 1",
        "description": "Two classes marked 1 in the first row (Σ q = 2), a row summing to 0.5 "
        "in the second. The gradient is a·Σq − q per sample, not a − q: compare `gradient` "
        "with `probabilities` minus the labels.",
        "value": {
            "logits": TWO_SAMPLES,
            "labels": [[1.0, 1.0, 0.0], [0.0, 0.25, 0.25]],
            "reduction": "sum",
        },
    },
    "label_smoothing_with_weights": {
        "summary": "Label smoothing with class weights",
        "description": "ε = 0.1 and w = [1, 2, 0.5]: q_nc = (1 − ε)·w_{y_n}·[c = y_n] + "
        "(ε/C)·w_c, so Σ_c q_nc = (1 − ε)·w_{y_n} + (ε/C)·Σw ≠ 1 and the gradient is "
        "(a·Σq − q)/D with D = Σ_n w_{y_n} (PyTorch's weighted mean).",
        "value": {
            "logits": TWO_SAMPLES,
            "labels": [0, 2],
            "weight": [1.0, 2.0, 0.5],
            "label_smoothing": 0.1,
        },
    },
    "ignored_sample": {
        "summary": "An ignored sample (ignore_index) and per-sample losses",
        "description": "The second label equals `ignore_index` (-100): its target row is 0, "
        "its loss and gradient are 0. With `none` every sample's loss is returned.",
        "value": {"logits": TWO_SAMPLES, "labels": [2, -100], "reduction": "none"},
    },
    "extreme_logits": {
        "summary": "Extreme logits (±1e4)",
        "description": "Logits 2·10^4 apart: the softmax is computed with the row maximum "
        "subtracted, so nothing overflows; probabilities are exactly 0 or 1 in float64 and "
        "the loss is large but finite." + MASK_NOTE,
        "value": {"logits": EXTREME, "labels": [1, 2]},
    },
    "candidate_right": {
        "summary": "Check your own gradient: a right one",
        "description": "`candidate` holds your own outputs; `candidate_check` compares them with "
        "the exact reference within `tolerance`. This gradient is right to six decimals.",
        "value": {
            "logits": TWO_SAMPLES,
            "labels": [0, 1],
            "include": ["loss"],
            "candidate": {"gradient": RIGHT_GRADIENT},
        },
    },
    "candidate_not_divided": {
        "summary": "Check your own gradient: summed, not averaged",
        "description": "Twice the answer for N = 2: `candidate_check.diagnoses` names the "
        "mistake (not_divided) and the step that fixes it.",
        "value": {
            "logits": TWO_SAMPLES,
            "labels": [0, 1],
            "include": ["loss"],
            "candidate": {"gradient": SUMMED_GRADIENT},
        },
    },
    "candidate_a_minus_y": {
        "summary": "Check your own gradient: a − y with class weights",
        "description": "With weights the target row sums to w_y, not 1: the gradient is "
        "(a·Σq − q)/D, and (a − q)/D is the classic slip (a_minus_y).",
        "value": {
            "logits": TWO_SAMPLES,
            "labels": [0, 1],
            "weight": [1.0, 2.0, 0.5],
            "include": ["loss"],
            "candidate": {
                "gradient": [[-0.113666, 0.080811, 0.032855], [0.038705, -0.380674, 0.008636]]
            },
        },
    },
    "candidate_sign_flipped": {
        "summary": "Check your own gradient: y − a instead of a − y",
        "description": "The right numbers with the wrong sign (sign_flipped).",
        "value": {
            "logits": TWO_SAMPLES,
            "labels": [0, 1],
            "include": ["loss"],
            "candidate": {"gradient": [[-x for x in row] for row in RIGHT_GRADIENT]},
        },
    },
    FLOAT32_FAILS: {
        "summary": "A float32 check that fails",
        "description": FLOAT32_NOTE,
        "value": {
            "logits": FOUR_CLASSES,
            "labels": [3, 1],
            "dtype": "float32",
            "numeric": {"method": "central", "step": 1e-5},
        },
    },
}

SOFTMAX_EXAMPLES: dict[str, Example] = {
    "batch_with_jacobian": {
        "summary": "A batch: probabilities, log-probabilities and Jacobian",
        "description": "Each sample's Jacobian is diag(a) − a·aᵀ, entry a_i(δ_ij − a_j).",
        "value": {
            "logits": TWO_SAMPLES,
            "include": ["probabilities", "log_probabilities", "jacobian"],
        },
    },
    "numeric_jacobian_check": {
        "summary": "Jacobian checked against central differences",
        "description": "Adds the numeric Jacobian and `jacobian_check`: element-wise "
        "|analytic − numeric| ≤ atol + rtol·|numeric|.",
        "value": {
            "logits": FOUR_CLASSES,
            "include": ["probabilities", "jacobian", "numeric_jacobian"],
        },
    },
    "single_sample": {
        "summary": "One sample as a flat list",
        "description": "A flat list is one sample (N = 1).",
        "value": {"logits": [1.0, 2.0, 3.0]},
    },
    "extreme_logits": {
        "summary": "Extreme logits (±1e4)",
        "description": "Saturated rows: probabilities 0 and 1, a Jacobian of zeros, no "
        "overflow." + MASK_NOTE,
        "value": {
            "logits": [[1e4, -1e4, 0.0], [1000.0, 999.0, -1000.0]],
            "include": ["probabilities", "jacobian", "numeric_jacobian"],
        },
    },
    "complex_step": {
        "summary": "Complex-step derivative",
        "description": "Im f(z + ih)/h with h = 1e-20 has no subtraction, hence no rounding "
        "error: agreement to about 1e-16.",
        "value": {
            "logits": FOUR_CLASSES,
            "include": ["jacobian", "numeric_jacobian"],
            "numeric": {"method": "complex_step"},
        },
    },
    FLOAT32_FAILS: {
        "summary": "A float32 check that fails",
        "description": FLOAT32_NOTE,
        "value": {
            "logits": FOUR_CLASSES,
            "dtype": "float32",
            "include": ["probabilities", "jacobian", "numeric_jacobian"],
            "numeric": {"method": "central", "step": 1e-5},
        },
    },
}

PROBLEM_EXAMPLES: dict[str, Example] = {
    "student_problem": {
        "summary": "One student's problem",
        "description": "The seed names the student and the assignment; the same request gives "
        "the same numbers on every run and machine. Pass the returned `problem_id` to /v1/grade.",
        "value": {"seed": "hw3:ada@example.edu", "batch_size": 4, "num_classes": 3},
    },
    "weighted_smoothed": {
        "summary": "Class weights and label smoothing",
        "description": "Targets no longer sum to 1, so the gradient is a·Σq − q, not a − y.",
        "value": {
            "seed": "hw3-weights:ada@example.edu",
            "batch_size": 3,
            "num_classes": 4,
            "weight": [1.0, 2.0, 0.5, 1.0],
            "label_smoothing": 0.1,
        },
    },
    "probability_labels": {
        "summary": "Probability labels",
        "description": "Each label is a row of C probabilities (four decimals, summing to 1).",
        "value": {"seed": 42, "label_type": "probabilities", "reduction": "sum"},
    },
}

GRADED_PROBLEM = {"logits": TWO_SAMPLES, "labels": [0, 1]}
RIGHT_ANSWER = {"loss": 0.285104, "gradient": RIGHT_GRADIENT}
NOT_DIVIDED = {"loss": 0.570208, "gradient": SUMMED_GRADIENT}

GRADE_EXAMPLES: dict[str, Example] = {
    "right_answer": {
        "summary": "A right answer (problem given in full)",
        "description": "The problem is stated in full, so the example works on any deployment "
        "(a `problem_id` is signed with the deployment's own key). Loss and gradient are right "
        "to six decimals, within the default tolerance.",
        "value": {"problem": GRADED_PROBLEM, "submission": RIGHT_ANSWER},
    },
    "summed_not_averaged": {
        "summary": "A gradient summed instead of averaged",
        "description": "Loss and gradient are twice the answer: the student did not divide by "
        "the batch size N = 2.",
        "value": {"problem": GRADED_PROBLEM, "submission": NOT_DIVIDED},
    },
    "gradescope_format": {
        "summary": "Gradescope results.json",
        "description": "The same grading, answered as the body of Gradescope's results.json.",
        "value": {"problem": GRADED_PROBLEM, "submission": RIGHT_ANSWER, "format": "gradescope"},
    },
    "full_feedback": {
        "summary": "Feedback full: error sizes (reveals the answer)",
        "description": "The default feedback, `verdict`, names the wrong entries with the "
        "submitted value and the likely mistake, and holds no number derived from the "
        "expected values. `full` adds the error sizes: with the submitted value they give the "
        "expected one, so use it for instructors, not students.",
        "value": {"problem": GRADED_PROBLEM, "submission": NOT_DIVIDED, "feedback": "full"},
    },
}

BATCH_GRADE_EXAMPLES: dict[str, Example] = {
    "two_students": {
        "summary": "Two students, one problem",
        "description": "Results come back in the order of `submissions`.",
        "value": {"problem": GRADED_PROBLEM, "submissions": [RIGHT_ANSWER, NOT_DIVIDED]},
    },
    "roster": {
        "summary": "A roster: each student their own problem",
        "description": "`items` holds each student's problem (a `problem_id` from "
        "/v1/problems, or the problem in full as here) and answer; the grading options at the "
        "top apply to all. Results come back in item order, each with its `student` label.",
        "value": {
            "items": [
                {
                    "student": "ada@example.edu",
                    "problem": GRADED_PROBLEM,
                    "submission": RIGHT_ANSWER,
                },
                {
                    "student": "bob@example.edu",
                    "problem": {"logits": [[1.0, 0.0], [0.0, 1.0]], "labels": [0, 0]},
                    "submission": {
                        "loss": 0.813262,
                        "gradient": [[-0.134471, 0.134471], [-0.365529, 0.365529]],
                    },
                },
            ],
            "points": {"loss": 1, "gradient": 2},
            "partial_credit": True,
        },
    },
}


LINEAR_CROSS_ENTROPY_EXAMPLES: dict[str, Example] = {
    "lm_head": {
        "summary": "Hidden states through a head of 3 classes",
        "description": "Two positions with d = 2 features, a head W (3, 2) and bias b (3,): the "
        "logits are x·Wᵀ + b, and the response holds the loss and dL/dinput, dL/dlinear_bias "
        "(ask for linear_weight_gradient in include).",
        "value": {
            "input": [[0.5, -1.0], [1.5, 0.25]],
            "linear_weight": [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]],
            "linear_bias": [0.0, 0.1, -0.1],
            "labels": [0, 2],
            "include": ["loss", "input_gradient", "linear_weight_gradient", "linear_bias_gradient"],
        },
    },
    "causal_shift": {
        "summary": "Next-token prediction (causal_shift)",
        "description": "One sequence of 3 positions: position t is scored against label t + 1 "
        "and the last position is ignored, as Hugging Face's causal-LM loss does.",
        "value": {
            "input": [[[0.5, -1.0], [1.5, 0.25], [0.0, 1.0]]],
            "linear_weight": [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]],
            "labels": [[0, 2, 1]],
            "causal_shift": True,
        },
    },
}
