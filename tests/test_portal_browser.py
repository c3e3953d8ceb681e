"""A person in a real browser (Debian's chromium, headless, driven by Playwright; no browser is downloaded):
signs in through the OpenID provider's page, lists the held messages, opens one and releases it."""

from __future__ import annotations

import pytest

from tests import portal_env as env
from tests.conftest import program
from tests.mx_harness import wait_for
from tests.test_portal import OWN, UID, stack  # noqa: F401  (the portal, its directory and OpenID provider)

pytestmark = pytest.mark.needs("chromium", "slapd", "slapadd", "openssl")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=program("chromium"), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_sign_in_list_open_and_release_in_a_browser(stack, browser):  # noqa: F811
    portal, mx = stack
    subject = "seen in a browser <b>bold?</b>"
    message = env.held_message("promo@ext.example.net", [OWN], subject=subject)
    assert portal.post(env.prefixed(message), [OWN], "promo@ext.example.net").status_code == 200
    # The test certificates are self-signed: the browser is told to accept them, nothing else changes.
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    try:
        page.goto(f"{portal.url}/?sender=promo%40ext.example.net", timeout=30000)
        assert page.url.startswith(portal.oidc.issuer)  # not signed in: sent to the AAI sign-in
        page.get_by_placeholder("sub").fill(UID)
        page.get_by_role("button", name="Authorize").click()
        page.wait_for_url(f"{portal.url}/?sender=promo%40ext.example.net", timeout=30000)
        assert page.inner_text("#uid") == UID
        assert page.inner_text("#count") == "1 held message"
        page.get_by_role("link", name=subject).click()  # the markup is text: the link's name is the whole subject
        page.wait_for_url(f"{portal.url}/messages/*")
        assert page.inner_text("#subject") == subject
        assert page.locator("b", has_text="bold?").count() == 0
        assert "spam, spam, spam" in page.inner_text("#text")
        page.click("#release")
        page.wait_for_selector("#notice")
        assert "released" in page.inner_text("#notice")
        assert "(released " in page.inner_text("#recipients")
    finally:
        context.close()
    [released] = wait_for(lambda: [m for m in mx.messages if b"seen in a browser" in m.content], 10, "the release")
    assert (released.mail_from, released.rcpt_tos) == ("promo@ext.example.net", (OWN,))
