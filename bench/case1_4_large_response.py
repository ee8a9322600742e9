"""Cases 1 and 4 (issue 6, issue 13 item 4): one large cross-entropy request (N×C of
`Plan.large`, default outputs) end to end, as JSON against its in-process floor and as .npz in
and out against its own floor; for information, a JSON request answered as .npz against its
floor, and JSON against .npz end to end."""

from typing import Any

from bench import cases
from bench.client import Connection
from bench.plan import Bench
from bench.report import Row, row


def measure(bench: Bench) -> tuple[list[Row], dict[str, Any]]:
    """The rows of cases 1 and 4, and what the responses held."""
    plan = bench.plan
    payload = cases.problem(*plan.large)
    connection = Connection(bench.shared_server.port)
    json_fields = cases.post_json(connection, payload)
    npz_fields = cases.post_npz(connection, payload)
    binary_fields = cases.post_binary(connection, cases.npz_request(payload))
    cases.floor(payload)
    cases.npz_floor(payload)
    cases.binary_floor(payload)
    actions = {
        "json_floor": lambda: cases.floor(payload),
        "json": lambda: cases.post_json(connection, payload),
        "binary_floor": lambda: cases.binary_floor(payload),
        "binary": lambda: cases.post_binary(connection, cases.npz_request(payload)),
        "json_in_npz_out_floor": lambda: cases.npz_floor(payload),
        "json_in_npz_out": lambda: cases.post_npz(connection, payload),
    }
    medians = cases.interleaved(actions, plan.repeats)
    connection.close()
    floor, json_time = medians["json_floor"], medians["json"]
    n, c = plan.large
    details = {
        "json_response_keys": sorted(json_fields),
        "npz_response_keys": sorted(npz_fields),
        "binary_response_keys": sorted(binary_fields),
        "output_bytes": cases.output_bytes(npz_fields),
        "seconds": medians,
    }
    binary, binary_floor = medians["binary"], medians["binary_floor"]
    mixed, mixed_floor = medians["json_in_npz_out"], medians["json_in_npz_out_floor"]
    rows = [
        row(
            "1",
            f"1 large response, JSON (N={n}, C={c})",
            json_time,
            floor,
            "s",
            json_time / floor,
            "end-to-end time / in-process floor",
        ),
        row(
            "4",
            f"4 large response, .npz in and out (N={n}, C={c})",
            binary,
            binary_floor,
            "s",
            binary / binary_floor,
            "end-to-end time / in-process floor (request archive and np.load, numerics, "
            "encode_npz, np.load)",
        ),
        row(
            "4 JSON in",
            f"4 JSON in, .npz out, information (N={n}, C={c})",
            mixed,
            mixed_floor,
            "s",
            mixed / mixed_floor,
            "end-to-end time / in-process floor (JSON request encoded and decoded, numerics, "
            "encode_npz, np.load)",
        ),
        row(
            "4 JSON/.npz",
            f"4 JSON / .npz, information (N={n}, C={c})",
            binary,
            json_time,
            "s",
            json_time / binary,
            "JSON in and out end to end / .npz in and out end to end",
        ),
    ]
    return rows, details
