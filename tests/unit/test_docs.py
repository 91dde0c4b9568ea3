"""Every setting is documented (datasette's habit: the docs are tested)."""

from __future__ import annotations

from pathlib import Path

from leadflow.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_setting_is_documented_in_settings_md():
    text = (DOCS / "settings.md").read_text()
    missing = [
        f"LEADFLOW_{name.upper()}"
        for name in Settings.model_fields
        if f"`LEADFLOW_{name.upper()}`" not in text
    ]
    assert missing == []
