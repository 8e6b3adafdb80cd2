"""README.md's op list is what `tinyc ops` says (regenerate it with `make readme-ops`)."""
from pathlib import Path

from click.testing import CliRunner

from tinyc import op_list
from tinyc.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_op_list_is_tinyc_ops():
    assert op_list.readme_block(README.read_text()) == op_list.markdown(), \
        "README.md's op list differs from `tinyc ops`: run `make readme-ops`"


def test_markdown_has_every_op_tinyc_ops_prints():
    printed = CliRunner().invoke(main, ["ops"]).output
    names = {n.strip() for line in printed.splitlines() if line.startswith("  ") for n in line.split(",")}
    listed = op_list.markdown()
    assert names and all(n in listed for n in names)
