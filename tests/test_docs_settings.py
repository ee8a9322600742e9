"""Every setting of the service is in the docs' settings table, with its default."""

import re
from pathlib import Path

from app.core.config import Settings

OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def test_every_setting_is_documented_with_its_default() -> None:
    text = OPERATIONS.read_text()
    rows = {
        match.group(1): match.group(2).strip()
        for match in re.finditer(r"^\| `GRADCHECK_([A-Z_]+)` \| ([^|]*) \|", text, re.M)
    }
    for name, field in Settings.model_fields.items():
        assert name.upper() in rows, f"GRADCHECK_{name.upper()} is not in docs/operations.md"
        if field.default_factory is None and field.default is not None:
            default = field.default
            shown = str(default).lower() if isinstance(default, bool) else str(default)
            if not hasattr(default, "get_secret_value"):
                assert rows[name.upper()] == shown, name
