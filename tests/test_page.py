"""Sections of a page owned by commands (scripts.page)."""

from scripts.page import markers, write_section


def test_a_section_replaces_only_its_own_part(tmp_path):
    page = tmp_path / "PERFORMANCE.md"
    write_section(page, "a", "# first")
    assert page.read_text().count("# first") == 1
    page.write_text(page.read_text() + "\nwritten by hand\n")
    write_section(page, "b", "second")  # a second owner adds its section at the end
    write_section(page, "a", "# first, again")
    text = page.read_text()
    assert "# first, again" in text and "# first\n" not in text
    assert text.index("# first, again") < text.index("written by hand") < text.index("second")
    write_section(page, "b", "second, again")
    assert "second, again" in page.read_text() and "written by hand" in page.read_text()


def test_a_section_can_stay_last(tmp_path):
    page = tmp_path / "PERFORMANCE.md"
    write_section(page, "a", "first")
    write_section(page, "summary", "closing", at_end=True)
    write_section(page, "b", "later")  # appended after the closing section ...
    write_section(page, "summary", "closing, again", at_end=True)  # ... which moves back to the end
    text = page.read_text()
    assert text.index("first") < text.index("later") < text.index("closing, again")
    assert text.count("begin summary") == 1 and "closing\n" not in text


def test_a_page_without_sections_keeps_its_text(tmp_path):
    page = tmp_path / "RESULTS.md"
    page.write_text("# Results\n\nhand-written text\n")
    write_section(page, "claims", "first\n")
    write_section(page, "claims", "second\n")
    begin, end = markers("claims")
    text = page.read_text()
    assert text.startswith("# Results\n\nhand-written text\n") and "second" in text and "first" not in text
    assert text.count(begin) == 1 and text.count(end) == 1
    page.write_text(text + "\n## After\n\nkept\n")
    write_section(page, "claims", "third\n")
    write_section(page, "claims", "third\n")  # the same text again: the same page, no blank lines piling up
    assert page.read_text().endswith(f"{end}\n\n## After\n\nkept\n")
    assert "third" in page.read_text() and "second" not in page.read_text()
