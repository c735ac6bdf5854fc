"""The configuration table (docs/configuration.md) is the settings class, written out: they
cannot drift."""

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


def test_the_configuration_lists_every_setting_with_its_default(repo_root):
    documented = (repo_root / "docs" / "configuration.md").read_text()
    assert settings_table() in documented, (
        "docs/configuration.md's table is out of date; paste this:\n" + settings_table()
    )


def test_the_readme_names_only_real_settings_with_their_defaults(repo_root):
    """The README's short table quotes a few settings: each name must be a setting."""
    readme = (repo_root / "README.md").read_text()
    section = readme.split("## Configuration and limits", 1)[1].split("\n## ", 1)[0]
    quoted = {
        name.strip("` ")
        for row in section.splitlines()
        if row.startswith("| `")
        for name in row.split("|")[1].split(",")
    }
    assert quoted and quoted <= {name.upper() for name in Settings.model_fields}


if __name__ == "__main__":
    print(settings_table())
