"""The documented contract of the JSON API: one module per concern.

- `compute`: /v1/softmax and /v1/cross-entropy requests and responses;
- `grading`: /v1/problems, /v1/grade and /v1/grade/batch;
- `errors`: the bodies of 4xx answers.
"""
