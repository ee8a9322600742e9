"""Autograding, pure Python and numpy (no HTTP here).

- problems.py     seeded cross-entropy problems, reproducible on every machine and numpy version
- tokens.py       problem ids: the problem's parameters, signed with HMAC-SHA256
- grade.py        reference values and the vectorised grading of many submissions at once (a
                  student's answer read leniently by app.numerics.candidate: every defect a
                  message, never an error)
- formats.py      the result as native JSON, Gradescope's results.json or PrairieLearn's result
"""
