"""The README's configuration table is the settings class, written out: they cannot drift."""

from __future__ import annotations

from pathlib import Path

from service.settings import PROJECT_ROOT, Settings


def settings_table() -> str:
    """The Markdown table of every setting: variable, default, meaning."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, Path):
            default = default.relative_to(PROJECT_ROOT)
        shown = f"`{default}`" if default not in ("", None) else "(empty)"
        rows.append(f"| `{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


def test_readme_lists_every_setting_with_its_default(repo_root):
    readme = (repo_root / "README.md").read_text()
    assert settings_table() in readme, (
        "README.md's configuration table is out of date; paste this:\n" + settings_table()
    )


if __name__ == "__main__":
    print(settings_table())
