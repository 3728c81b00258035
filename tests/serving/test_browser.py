"""The review page in a real headless Chromium (Debian's package, not a Playwright download).

`make test` installs /usr/bin/chromium when it is missing; the test fails, not skips, without it, so a
CI run can never pass without having driven the page.
"""

import sqlite3
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make test` does it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def test_vote_in_the_browser_lands_in_the_database(page, live_server):
    url, app = live_server
    page.goto(f"{url}/review")
    page.wait_for_selector("#model-2 option[value=base]", state="attached")
    page.select_option("#model-1", "alpha")
    page.select_option("#model-2", "base")
    page.click("#new")
    page.wait_for_selector("#comparison", state="visible")
    comparison_id = page.evaluate("location.hash").removeprefix("#c=")
    shown = (page.text_content("#answer-A"), page.text_content("#answer-B"))

    page.select_option("#quality-A", "2")
    page.select_option("#quality-B", "5")
    page.select_option("#fit-B", "4")
    page.fill("#comment", "B stays on topic")
    page.click("#vote-B")
    page.wait_for_selector("#status:has-text('Vote recorded')")

    with sqlite3.connect(app.state.store.path) as conn:
        comparison = conn.execute("SELECT left_model, right_model, left_answer, right_answer FROM comparisons "
                                  "WHERE id = ?", (comparison_id,)).fetchone()
        votes = conn.execute("SELECT comparison_id, choice, winner_model, left_quality, right_quality, "
                             "right_domain_fit, comment FROM votes").fetchall()
        [(reviewer,)] = conn.execute("SELECT reviewer FROM votes").fetchall()
    left, right, left_answer, right_answer = comparison
    assert {left, right} == {"alpha", "base"}
    assert shown == (left_answer, right_answer), "the page shows the left answer as A"
    assert votes == [(comparison_id, "B", right, 2, 5, 4, "B stays on topic")]
    assert reviewer.startswith("browser-"), "the page's cookie names the reviewer"
    assert page.text_content("#status").endswith(f"A was {left}, B was {right}")

    page.goto(f"{url}/results")
    page.wait_for_selector("#pairs tr")
    assert page.text_content("#pairs tr").startswith("alphabase1")


def test_model_output_is_shown_as_text_never_run(page, live_server):
    url, app = live_server
    evil = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">"
    comparison = app.state.store.add_comparison(evil, "typed", None, "alpha", "beta", evil, "plain", {},
                                                reviewer="someone")
    page.goto(f"{url}/review#c={comparison.id}")
    page.wait_for_selector("#comparison", state="visible")
    assert page.text_content("#answer-A") == evil and page.text_content("#prompt") == evil
    assert page.evaluate("window.pwned") is None
    assert page.locator("#answer-A img, #answer-A script").count() == 0


TOKEN = "ann-token-0123456789"


@pytest.fixture
def listed_server(start_server, tmp_path):
    """A real server started with a reviewer list (conftest's live_server has none)."""
    listed = tmp_path / "reviewers.txt"
    listed.write_text(f"ann {TOKEN}\n")
    return start_server(reviewers_file=listed)


def test_listed_reviewer_is_asked_for_the_token_once(page, listed_server):
    url, app = listed_server
    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept(TOKEN)))
    page.goto(f"{url}/review")
    page.wait_for_selector("#model-2 option[value=base]", state="attached")
    page.fill("#typed", "Is ibuprofen safe with coffee?")
    page.click("#new")
    page.wait_for_selector("#comparison", state="visible")
    page.click("#vote-A")
    page.wait_for_selector("#status:has-text('Vote recorded')")
    assert asked == ["Your reviewer token:"], "asked once, then kept for the session's later calls"
    with sqlite3.connect(app.state.store.path) as conn:
        assert conn.execute("SELECT reviewer, choice FROM votes").fetchall() == [("ann", "A")]
