"""Autograding, pure Python and numpy (no HTTP here).

- problems.py     seeded cross-entropy problems, reproducible on every machine and numpy version
- tokens.py       problem ids: the problem's parameters, signed with HMAC-SHA256
- submissions.py  a student's answer read leniently: every defect becomes a message, never an error
- grade.py        reference values and the vectorised grading of many submissions at once
- formats.py      the result as native JSON, Gradescope's results.json or PrairieLearn's result
"""
